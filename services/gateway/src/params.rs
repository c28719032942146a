//! Query parameters arrive as text and are checked here, so that every mistake is
//! reported by name with what would be accepted, never as a bare 400 or 500.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use comb_kit::Problem;
use comb_kit::problem::FieldError;

/// Smallest and largest page sizes, and the size when none is asked for.
pub(crate) const MIN_LIMIT: u32 = 1;
pub(crate) const MAX_LIMIT: u32 = 100;
pub(crate) const DEFAULT_LIMIT: u32 = 20;

/// The query string, or a problem saying why it cannot be read.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    query.map(|Query(params)| params).map_err(|rejection| {
        Problem::bad_request(format!(
            "the query string cannot be read: {}",
            rejection.body_text()
        ))
    })
}

/// Collects field errors while parameters are checked.
#[derive(Default)]
pub(crate) struct Checks(Vec<FieldError>);

impl Checks {
    pub(crate) fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub(crate) fn limit(&mut self, raw: Option<&str>) -> u32 {
        let Some(raw) = raw else {
            return DEFAULT_LIMIT;
        };
        match raw.trim().parse::<u32>() {
            Ok(limit) if (MIN_LIMIT..=MAX_LIMIT).contains(&limit) => limit,
            _ => {
                self.fail(
                    "limit",
                    format!(
                        "must be a whole number from {MIN_LIMIT} to {MAX_LIMIT}, got {:?}",
                        truncate(raw)
                    ),
                );
                DEFAULT_LIMIT
            }
        }
    }

    /// Ok when nothing failed, else a validation problem listing every failure.
    pub(crate) fn finish(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::invalid(self.0))
        }
    }
}

/// Echoes at most a short prefix of a bad value back to the caller.
pub(crate) fn truncate(value: &str) -> String {
    const SHOWN: usize = 40;
    if value.chars().count() <= SHOWN {
        value.to_owned()
    } else {
        format!("{}…", value.chars().take(SHOWN).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_named() {
        let mut checks = Checks::default();
        assert_eq!(checks.limit(None), DEFAULT_LIMIT);
        assert_eq!(checks.limit(Some("7")), 7);
        checks.limit(Some("-1"));
        checks.limit(Some("abc"));
        checks.limit(Some("0"));
        checks.limit(Some("101"));
        let problem = checks.finish().expect_err("four bad limits");
        assert_eq!(problem.errors.len(), 4);
        assert!(problem.errors.iter().all(|e| e.field == "limit"));
        assert!(problem.detail.contains("got \"-1\""), "{}", problem.detail);
    }

    #[test]
    fn long_values_are_not_echoed_whole() {
        assert_eq!(truncate(&"x".repeat(10_000)).chars().count(), 41);
    }
}
