//! Account rules: what an email address, a password and a name must be.

/// An email address, trimmed and lower-cased, so one address is one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(text: &str) -> Result<Self, String> {
        let email = text.trim().to_lowercase();
        let problem = || "must be an email address such as ada@example.com".to_owned();
        if email.is_empty()
            || email.len() > 254
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(problem());
        }
        let (local, domain) = email.split_once('@').ok_or_else(problem)?;
        let domain_ok = domain.contains('.')
            && !domain.contains('@')
            && domain
                .split('.')
                .all(|label| !label.is_empty() && label.len() <= 63);
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(problem());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Passwords so common that attackers try them first.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyui",
    "qwerty123",
    "iloveyou",
    "letmein1",
    "11111111",
    "00000000",
    "abc12345",
    "passw0rd",
    "welcome1",
];

/// Checks a new password: long enough to resist guessing, short enough to hash, and not
/// one an attacker would try first.
pub fn check_password(password: &str, email: &Email) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if length > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    let lowered = password.to_lowercase();
    let local = email.as_str().split('@').next().unwrap_or_default();
    if lowered == email.as_str() || lowered == local {
        return Err("must not be your email address".into());
    }
    if COMMON_PASSWORDS.contains(&lowered.as_str())
        || password.chars().all(|c| password.starts_with(c))
    {
        return Err("is too easy to guess; choose a less common one".into());
    }
    Ok(())
}

pub const MAX_NAME_CHARS: usize = 100;

/// A person's name as they want it shown.
pub fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").expect("valid").as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
            "ada@example..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_must_be_hard_to_guess() {
        let email = Email::parse("ada@example.com").expect("valid");
        assert!(check_password("correct horse battery", &email).is_ok());
        assert!(
            check_password("short", &email)
                .expect_err("short")
                .contains("at least 8")
        );
        assert!(
            check_password(&"x".repeat(129), &email)
                .expect_err("long")
                .contains("at most 128")
        );
        assert!(
            check_password("Password1", &email)
                .expect_err("common")
                .contains("guess")
        );
        assert!(check_password("aaaaaaaaaa", &email).is_err());
        assert!(
            check_password("ada@example.com", &email)
                .expect_err("email")
                .contains("email")
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            check_name("  Ada Lovelace ").expect("valid"),
            "Ada Lovelace"
        );
        assert!(check_name("  ").is_err());
        assert!(check_name(&"n".repeat(101)).is_err());
        assert!(check_name("Ada\u{0}").is_err());
    }
}
