//! Calling other services over gRPC: one lazily connected channel per instance, built once
//! at start and kept in state, a deadline on every call, and the mapping of gRPC failures to
//! problem+json for the caller's own callers.

use tonic::{Code, Status};

use crate::problem::{FieldError, Problem, field_errors_to_message};

pub use crate::client::{BreakerState, CallPolicy, Upstream, UpstreamChannel, UpstreamError};

/// The metadata key with which a caller's own channel says why it refused a call without
/// sending it (a [`Refusal`]).
pub const REFUSED_HEADER: &str = "comb-refused";

/// Why the caller's own channel refused a call without an answer from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The upstream keeps failing, so calls to it are paused (its breaker is open).
    CircuitOpen,
    /// Too many calls to the upstream are in flight from this caller.
    Overloaded,
    /// The caller's deadline left no time for the call, or the upstream did not answer in it.
    Deadline,
    /// No instance of the upstream was left to try.
    NoInstance,
    /// The call's own request could not be read.
    Unreadable,
}

impl Refusal {
    /// Its value in [`REFUSED_HEADER`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit-open",
            Self::Overloaded => "overloaded",
            Self::Deadline => "deadline",
            Self::NoInstance => "no-instance",
            Self::Unreadable => "unreadable",
        }
    }

    /// Why the caller's own channel refused the call that ended with `status`, if it did.
    pub fn of(status: &Status) -> Option<Self> {
        let value = status.metadata().get(REFUSED_HEADER)?.to_str().ok()?;
        [
            Self::CircuitOpen,
            Self::Overloaded,
            Self::Deadline,
            Self::NoInstance,
            Self::Unreadable,
        ]
        .into_iter()
        .find(|refusal| refusal.as_str() == value)
    }
}

/// A gRPC call's outcome as a REST handler wants it: the answer's message, or the problem
/// its failure means for the handler's own caller ([`problem_from_status`]).
pub trait Answer<T> {
    fn answered_by(self, upstream: &Upstream) -> Result<T, Problem>;
}

impl<T> Answer<T> for Result<tonic::Response<T>, Status> {
    fn answered_by(self, upstream: &Upstream) -> Result<T, Problem> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| upstream.problem(&status))
    }
}

/// A gRPC answer with no message, only a status ("trailers-only"): what a server or a
/// client says when it refuses a call before doing any work.
pub fn trailers_only<B>(body: B, code: Code, message: &str) -> http::Response<B> {
    let mut response = http::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", http::HeaderValue::from(code as i32));
    if let Ok(message) = http::HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", message);
    }
    response
}

/// `grpc-message` is percent-encoded: printable ASCII but `%` as is, the rest escaped.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b' '..=b'~' if byte != b'%' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Maps a failed gRPC call to `service` onto the problem a REST caller should see: the
/// callee's own verdicts (not found, invalid) pass through, its absence becomes 503. A
/// callee's refusal of a well-formed request is 422 (400 is for requests the caller itself
/// could not read).
pub fn problem_from_status(service: &str, status: &Status) -> Problem {
    match status.code() {
        Code::NotFound => Problem::not_found(status.message().to_owned()),
        Code::Unauthenticated => Problem::unauthorized(status.message().to_owned()),
        Code::PermissionDenied => Problem::forbidden(status.message().to_owned()),
        Code::InvalidArgument | Code::OutOfRange => match field_errors(status) {
            Some(errors) => Problem::unprocessable(errors),
            None => Problem::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
                status.message().to_owned(),
            ),
        },
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
            Problem::conflict(status.message().to_owned())
        }
        // Unknown is also what a call gets when the connection breaks mid-flight (the
        // instance died), so it counts as the service being unavailable.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::Unknown => {
            tracing::warn!(upstream = service, code = ?status.code(), message = status.message(), "upstream unavailable");
            Problem::unavailable(format!(
                "the {service} service is unavailable right now ({}); retry in a moment",
                describe_unavailable(status)
            ))
        }
        _ => {
            tracing::error!(upstream = service, code = ?status.code(), message = status.message(), "upstream call failed");
            Problem::bad_gateway(format!(
                "the {service} service failed to answer; it has been logged, please retry"
            ))
        }
    }
}

/// The longest key (order id, payment id, owner) services accept.
pub const MAX_KEY_LEN: usize = 80;

/// Whether `text` can be a key: an id another service made (order, payment, user or
/// guest id) or an idempotency key: 1 to 80 letters, digits, hyphens or underscores.
pub fn is_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_KEY_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The field error for a value that is not a key.
pub fn key_error(field: &str) -> FieldError {
    FieldError::new(
        field,
        "must be 1 to 80 letters, digits, hyphens or underscores",
    )
}

/// `Ok` when `value` is a key, else `INVALID_ARGUMENT` naming `field`.
pub fn check_key(field: &str, value: &str) -> Result<(), Status> {
    if is_key(value) {
        Ok(())
    } else {
        Err(invalid_argument(&[key_error(field)]))
    }
}

/// A failed call to another service, as this service's own answer to its caller: the
/// callee's absence stays UNAVAILABLE (retry later); anything else is this service's
/// failure, logged with the callee's words.
pub fn callee_failed(service: &str, status: &Status) -> Status {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Unknown
        | Code::Cancelled
        | Code::ResourceExhausted => {
            Status::unavailable(format!("{service} is unavailable; retry in a moment"))
        }
        _ => {
            tracing::error!(upstream = service, code = ?status.code(), message = status.message(), "call failed");
            Status::internal(format!("{service} failed"))
        }
    }
}

/// An `INVALID_ARGUMENT` status listing the fields at fault: readable as its message, and
/// carrying the list itself in the status details, so a caller can pass it on field by
/// field.
pub fn invalid_argument(errors: &[FieldError]) -> Status {
    let details = serde_json::to_vec(errors).unwrap_or_default();
    Status::with_details(
        Code::InvalidArgument,
        field_errors_to_message(errors),
        details.into(),
    )
}

/// The field errors a status made by [`invalid_argument`] carries.
pub fn field_errors(status: &Status) -> Option<Vec<FieldError>> {
    serde_json::from_slice::<Vec<FieldError>>(status.details())
        .ok()
        .filter(|errors| !errors.is_empty())
}

fn describe_unavailable(status: &Status) -> &'static str {
    if Refusal::of(status) == Some(Refusal::CircuitOpen) {
        return "it keeps failing, so calls to it are paused for a moment";
    }
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => "it did not answer before the deadline",
        Code::ResourceExhausted => "it is overloaded",
        _ => "it cannot be reached",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn statuses_map_to_problems() {
        let cases = [
            (Status::not_found("no product x"), StatusCode::NOT_FOUND),
            // A callee's refusal of a request the caller could read: 422.
            (
                Status::invalid_argument("bad"),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                invalid_argument(&[FieldError::new("limit", "too big")]),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (Status::already_exists("dup"), StatusCode::CONFLICT),
            (Status::unauthenticated("who?"), StatusCode::UNAUTHORIZED),
            (Status::permission_denied("no"), StatusCode::FORBIDDEN),
            (Status::unavailable("down"), StatusCode::SERVICE_UNAVAILABLE),
            (
                Status::deadline_exceeded("slow"),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Status::unknown("connection reset"),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (Status::internal("boom"), StatusCode::BAD_GATEWAY),
        ];
        for (status, expected) in cases {
            assert_eq!(
                problem_from_status("catalog", &status).status_code(),
                expected,
                "{status:?}"
            );
        }
        let errors = vec![
            FieldError::new("cursor", "is not ours; pass next_cursor"),
            FieldError::new("q", "must not be empty"),
        ];
        let status = invalid_argument(&errors);
        assert_eq!(
            status.message(),
            "cursor: is not ours; pass next_cursor; q: must not be empty"
        );
        assert_eq!(problem_from_status("catalog", &status).errors, errors);
        assert_eq!(field_errors(&Status::invalid_argument("plain")), None);
        let problem = problem_from_status("catalog", &Status::internal("secret detail"));
        assert!(
            !problem.detail.contains("secret"),
            "internal causes stay in the log"
        );
    }
}
