//! Shipping rules: what makes an address deliverable, what shipping costs, and how a
//! shipment's status follows from its age.

use comb_kit::problem::FieldError;

/// A checked delivery address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

/// The raw fields of an address, as a caller sent them.
#[derive(Debug, Clone, Default)]
pub struct AddressInput<'a> {
    pub name: &'a str,
    pub line1: &'a str,
    pub line2: &'a str,
    pub city: &'a str,
    pub postal_code: &'a str,
    pub country: &'a str,
}

impl Address {
    /// Checks every field, naming each one at fault as `address.FIELD`.
    pub fn parse(input: &AddressInput<'_>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut text = |field: &str, value: &str, required: bool, max: usize| -> String {
            let value = value.trim();
            if (required && value.is_empty())
                || value.chars().count() > max
                || value.chars().any(char::is_control)
            {
                let need = if required { "1" } else { "0" };
                errors.push(FieldError::new(
                    format!("address.{field}"),
                    format!("must be {need} to {max} characters"),
                ));
            }
            value.to_owned()
        };
        let name = text("name", input.name, true, 100);
        let line1 = text("line1", input.line1, true, 200);
        let line2 = text("line2", input.line2, false, 200);
        let city = text("city", input.city, true, 100);
        let postal_code = text("postal_code", input.postal_code, true, 16);
        let country = input.country.trim().to_ascii_uppercase();
        if !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase())) {
            errors.push(FieldError::new(
                "address.country",
                "must be a two-letter country code such as US",
            ));
        }
        if errors.is_empty() {
            Ok(Self {
                name,
                line1,
                line2,
                city,
                postal_code,
                country,
            })
        } else {
            Err(errors)
        }
    }
}

const NORTH_AMERICA: &[&str] = &["CA", "MX"];
const EUROPE: &[&str] = &[
    "AT", "BE", "BG", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GB", "GR", "HR", "HU",
    "IE", "IS", "IT", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// What shipping costs (in US cents) and how many days it takes.
pub fn quote(country: &str, item_count: u32) -> (i64, u32) {
    let extra = i64::from(item_count.saturating_sub(1));
    let (base, per_item, days) = if country == "US" {
        (499, 100, 3)
    } else if NORTH_AMERICA.contains(&country) {
        (999, 150, 6)
    } else if EUROPE.contains(&country) {
        (1299, 200, 7)
    } else {
        (1999, 300, 12)
    };
    (base + per_item * extra, days)
}

/// Where a shipment is, from how long ago it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Created,
    Shipped,
    Delivered,
}

/// The shipment clock: how long after creation a shipment ships, and is delivered.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub ship_after_ms: i64,
    pub deliver_after_ms: i64,
}

impl Clock {
    pub fn progress(&self, created_at_ms: i64, now_ms: i64) -> Progress {
        let age = now_ms.saturating_sub(created_at_ms);
        if age >= self.deliver_after_ms {
            Progress::Delivered
        } else if age >= self.ship_after_ms {
            Progress::Shipped
        } else {
            Progress::Created
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_field_by_field() {
        let good = AddressInput {
            name: " Ada ",
            line1: "1 Engine Way",
            line2: "",
            city: "London",
            postal_code: "N1 9GU",
            country: "gb",
        };
        let address = Address::parse(&good).expect("valid");
        assert_eq!(
            (address.name.as_str(), address.country.as_str()),
            ("Ada", "GB")
        );
        let bad = AddressInput {
            country: "Britain",
            city: " ",
            ..good
        };
        let fields: Vec<String> = Address::parse(&bad)
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["address.city", "address.country"]);
    }

    #[test]
    fn quotes_grow_with_distance_and_items() {
        assert_eq!(quote("US", 1), (499, 3));
        assert_eq!(quote("US", 3), (699, 3));
        assert_eq!(quote("CA", 1), (999, 6));
        assert_eq!(quote("DE", 2), (1499, 7));
        assert_eq!(quote("JP", 1), (1999, 12));
        assert_eq!(quote("US", 0), (499, 3));
    }

    #[test]
    fn status_follows_the_clock() {
        let clock = Clock {
            ship_after_ms: 100,
            deliver_after_ms: 300,
        };
        assert_eq!(clock.progress(1_000, 1_050), Progress::Created);
        assert_eq!(clock.progress(1_000, 1_100), Progress::Shipped);
        assert_eq!(clock.progress(1_000, 1_300), Progress::Delivered);
    }
}
