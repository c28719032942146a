//! Cards: the checks any card must pass (Luhn, expiry, CVC format) and the payment
//! sandbox's test cards, which behave like a payment processor's. Part of the payments
//! contract: orders refuses a malformed card before an order exists, payments decides.
//!
//! | number | what happens |
//! |---|---|
//! | `4242 4242 4242 4242` | authorized |
//! | `4000 0000 0000 0002` | declined (`card_declined`) |
//! | `4000 0000 0000 9995` | declined (`insufficient_funds`) |
//! | `4000 0000 0000 0119` | processor error: unavailable, retry later |
//! | any other number that passes the checks | authorized |

/// What the processor says about a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Decline(&'static str),
    ProcessorError,
}

/// A card that passed the checks: its digits and the last four to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCard {
    pub last4: String,
    pub verdict: Verdict,
}

/// A card field at fault: the field's name and what is wrong with it.
pub type CardError = (&'static str, &'static str);

/// Checks a card as of (`year`, `month`) and tells what the sandbox processor says.
pub fn check(
    number: &str,
    exp_month: u32,
    exp_year: u32,
    cvc: &str,
    today: (u32, u32),
) -> Result<CheckedCard, Vec<CardError>> {
    let mut errors = Vec::new();
    let digits: String = number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(("card_number", "must be 12 to 19 digits"));
    } else if !luhn(&digits) {
        errors.push((
            "card_number",
            "is not a valid card number (check the digits)",
        ));
    }
    if !(1..=12).contains(&exp_month) {
        errors.push(("exp_month", "must be 1 to 12"));
    }
    if !(2000..=2200).contains(&exp_year) {
        errors.push(("exp_year", "must be a four-digit year"));
    } else if (1..=12).contains(&exp_month) && (exp_year, exp_month) < today {
        errors.push(("exp_year", "the card has expired"));
    }
    if !(cvc.len() == 3 || cvc.len() == 4) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(("cvc", "must be 3 or 4 digits"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let verdict = match digits.as_str() {
        "4000000000000002" => Verdict::Decline("card_declined"),
        "4000000000009995" => Verdict::Decline("insufficient_funds"),
        "4000000000000119" => Verdict::ProcessorError,
        _ => Verdict::Approve,
    };
    Ok(CheckedCard {
        last4: digits[digits.len() - 4..].to_owned(),
        verdict,
    })
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: (u32, u32) = (2026, 11);

    #[test]
    fn test_cards_behave_as_documented() {
        let verdict = |number| {
            check(number, 12, 2030, "123", TODAY)
                .expect("valid")
                .verdict
        };
        assert_eq!(verdict("4242 4242 4242 4242"), Verdict::Approve);
        assert_eq!(
            verdict("4000000000000002"),
            Verdict::Decline("card_declined")
        );
        assert_eq!(
            verdict("4000-0000-0000-9995"),
            Verdict::Decline("insufficient_funds")
        );
        assert_eq!(verdict("4000000000000119"), Verdict::ProcessorError);
        assert_eq!(verdict("5555555555554444"), Verdict::Approve);
        assert_eq!(
            check("4242424242424242", 1, 2030, "123", TODAY)
                .expect("valid")
                .last4,
            "4242"
        );
    }

    #[test]
    fn bad_cards_are_refused_field_by_field() {
        let fields = |number, month, year, cvc| -> Vec<String> {
            check(number, month, year, cvc, TODAY)
                .expect_err("invalid")
                .into_iter()
                .map(|(field, _)| field.to_owned())
                .collect()
        };
        assert_eq!(fields("4242424242424241", 12, 2030, "123"), ["card_number"]);
        assert_eq!(
            fields("42", 13, 30, "1"),
            ["card_number", "exp_month", "exp_year", "cvc"]
        );
        assert_eq!(
            fields("4242424242424242", 10, 2026, "123"),
            ["exp_year"],
            "expired last month"
        );
        assert!(
            check("4242424242424242", 11, 2026, "1234", TODAY).is_ok(),
            "valid through this month"
        );
    }
}
