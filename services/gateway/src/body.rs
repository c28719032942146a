//! JSON request bodies: bounded in size, and every way they can be wrong answered as
//! problem+json naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use comb_kit::Problem;
use serde::de::DeserializeOwned;

/// The largest JSON body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body deserialised into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(str::trim)
            .is_some_and(|media| media == "application/json" || media.ends_with("+json"));
        if !is_json {
            return Err(Problem::unsupported_media_type(
                "send the body as JSON, with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::payload_too_large(format!(
                        "the body is larger than {} KiB",
                        MAX_BODY_BYTES / 1024
                    ))
                } else {
                    Problem::bad_request(format!(
                        "the body could not be read: {}",
                        rejection.body_text()
                    ))
                }
            })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Deserialises a JSON document, reporting the path of the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                // "missing field `email` at line 1 column 2": the field is named in the message.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.split_once('`'))
                    .map(|(field, _)| field.to_owned());
                let field = match (missing, path.as_str()) {
                    (Some(field), ".") => field,
                    (Some(field), parent) => format!("{parent}.{field}"),
                    (None, ".") => "body".to_owned(),
                    (None, path) => path.to_owned(),
                };
                let reason = without_values(message.split(" at line ").next().unwrap_or(&message));
                Problem::invalid_field(&field, reason)
            }
            _ => Problem::bad_request(format!("the body is not valid JSON: {inner}")),
        }
    })
}

/// serde quotes the offending value in backticks (``invalid type: integer `4242...` ``);
/// a value may be a card number or a password, so it is never echoed back.
fn without_values(message: &str) -> String {
    let mut kept = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '`' {
            quoted = !quoted;
        } else if !quoted {
            kept.push(c);
        }
    }
    kept.replace("  ", " ").replace(" ,", ",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        email: String,
        address: Address,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Address {
        city: String,
        lines: Vec<String>,
    }

    fn field_of(json: &str) -> (String, String) {
        let problem = parse::<Order>(json.as_bytes()).expect_err("invalid");
        let error = problem.errors.first().cloned().expect("a field error");
        (error.field, error.message)
    }

    #[test]
    fn the_field_at_fault_is_named() {
        assert_eq!(
            field_of(r#"{"address": {"city": "x", "lines": []}}"#).0,
            "email"
        );
        assert_eq!(
            field_of(r#"{"email": 7, "address": {"city": "x", "lines": []}}"#).0,
            "email"
        );
        assert_eq!(
            field_of(r#"{"email": "a", "address": {"lines": []}}"#).0,
            "address.city"
        );
        let (field, message) =
            field_of(r#"{"email": "a", "address": {"city": "x", "lines": [1]}}"#);
        assert_eq!(field, "address.lines[0]");
        assert!(message.starts_with("invalid type"), "{message}");
        assert_eq!(field_of("[]").0, "body");
    }

    #[test]
    fn offending_values_are_not_echoed() {
        let problem = parse::<Order>(
            br#"{"email": 4242424242424242, "address": {"city": "x", "lines": []}}"#,
        )
        .expect_err("wrong type");
        let message = &problem.errors[0].message;
        assert!(!message.contains("4242"), "{message}");
        assert!(
            message.starts_with("invalid type: integer, expected"),
            "{message}"
        );
    }

    #[test]
    fn broken_json_is_a_bad_request() {
        let problem = parse::<Order>(b"{\"email\": ").expect_err("truncated");
        assert_eq!(problem.status, 400);
        assert!(
            problem.detail.contains("not valid JSON"),
            "{}",
            problem.detail
        );
        assert!(problem.errors.is_empty());
    }
}

/// Reads a whole number also when the JSON writes it with a fraction of zero (`5.0`), as
/// JSON Schema counts that an integer: for `#[serde(deserialize_with = "whole_number")]`.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::Deserialize;
    use serde::de::Error;
    // Beyond 2^53 a float no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|value| value.fract() == 0.0 && value.abs() <= EXACT)
            .map(|value| value as i64)
    });
    whole
        .and_then(|value| T::try_from(value).ok())
        .ok_or_else(|| D::Error::custom(format!("must be a whole number in range, got {number}")))
}

#[cfg(test)]
mod whole_number_tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Quantity {
        #[serde(deserialize_with = "whole_number")]
        n: u32,
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction_and_nothing_else() {
        let read = |json: &str| serde_json::from_str::<Quantity>(json).map(|q| q.n);
        assert_eq!(read(r#"{"n": 5}"#).ok(), Some(5));
        assert_eq!(read(r#"{"n": 5.0}"#).ok(), Some(5));
        for refused in [
            r#"{"n": 5.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": "5"}"#,
            r#"{"n": 1e300}"#,
        ] {
            assert!(read(refused).is_err(), "{refused}");
        }
    }
}
