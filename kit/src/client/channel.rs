//! The channel a call goes through: a client span, the deadline, the breaker, the
//! balancer, retries within the budget, and refusals answered as gRPC statuses.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use rand::Rng;
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use super::Shared;
use super::balance::{Verdict, verdict_of};
use crate::connection::CallError;
use crate::deadline::{self, GRPC_TIMEOUT, format_grpc_timeout};
use crate::trace::{grpc_server_error, grpc_status, inject_headers};

impl Shared {
    pub(super) fn rejected(&self, reason: &'static str) {
        metrics::counter!("comb_client_rejected_total", "upstream" => self.service.to_string(), "reason" => reason)
            .increment(1);
    }
}

/// A trailers-only gRPC answer made here, for a call refused before it left, saying why in
/// [`crate::grpc::REFUSED_HEADER`].
fn refusal(
    code: tonic::Code,
    why: crate::grpc::Refusal,
    message: &str,
) -> http::Response<tonic::body::Body> {
    let mut response = crate::grpc::trailers_only(tonic::body::Body::empty(), code, message);
    response.headers_mut().insert(
        crate::grpc::REFUSED_HEADER,
        http::HeaderValue::from_static(why.as_str()),
    );
    response
}

/// Reports a call's outcome to the breaker exactly once, even when the caller drops the
/// call half way (a page that stopped waiting).
pub(super) struct Outcome<'a> {
    pub(super) shared: &'a Shared,
    pub(super) trial: bool,
    pub(super) reported: bool,
}

impl Outcome<'_> {
    fn report(&mut self, succeeded: bool) {
        self.reported = true;
        self.shared.record_call(succeeded);
    }

    /// Ended for a reason that says nothing about the upstream (the caller ran out of
    /// time): a trial ends as if abandoned.
    fn neutral(&mut self) {
        self.reported = true;
        if self.trial {
            self.shared.trial_abandoned();
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.reported && self.trial {
            self.shared.trial_abandoned();
        }
    }
}

/// Decrements a counter when dropped, so a cancelled call still gives its slot back.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A channel to an upstream: see the module documentation for what each call gets.
#[derive(Debug, Clone)]
pub struct UpstreamChannel {
    pub(super) shared: Arc<Shared>,
    pub(super) traced: bool,
}

type CallFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, CallError>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for UpstreamChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = CallError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt waits for its own instance's channel.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let rpc = request.uri().path().to_owned();
        if !self.traced {
            return Box::pin(async move { call(shared, request, &rpc).await });
        }
        let span = tracing::info_span!(
            "grpc call",
            otel.name = %rpc.trim_start_matches('/'),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            peer.service = %shared.service,
            rpc.grpc.status_code = Empty,
            attempts = Empty,
        );
        Box::pin(
            async move {
                let mut request = request;
                inject_headers(&tracing::Span::current(), request.headers_mut());
                let result = call(shared, request, &rpc).await;
                let span = tracing::Span::current();
                match &result {
                    Ok(response) => {
                        if let Some(code) = grpc_status(response) {
                            span.record("rpc.grpc.status_code", code);
                            if grpc_server_error(code) || code == 8 {
                                span.record("otel.status_code", "ERROR");
                            }
                        }
                    }
                    Err(_) => {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

async fn call(
    shared: Arc<Shared>,
    request: http::Request<tonic::body::Body>,
    rpc: &str,
) -> Result<http::Response<tonic::body::Body>, CallError> {
    let service = Arc::clone(&shared.service);
    let callers_time = deadline::remaining();
    // Whether the caller's deadline, not the call timeout, bounds this call.
    let caller_limited = callers_time.is_some_and(|left| left < shared.policy.call_timeout);
    let timeout = match callers_time {
        Some(left) => left.min(shared.policy.call_timeout),
        None => shared.policy.call_timeout,
    };
    if timeout.is_zero() {
        shared.rejected("deadline");
        return Ok(refusal(
            tonic::Code::DeadlineExceeded,
            crate::grpc::Refusal::Deadline,
            &format!("no time left to call {service}"),
        ));
    }
    let deadline = Instant::now() + timeout;
    if shared.in_flight.load(Ordering::Relaxed) >= shared.policy.max_in_flight {
        shared.rejected("overloaded");
        return Ok(refusal(
            tonic::Code::ResourceExhausted,
            crate::grpc::Refusal::Overloaded,
            &format!("too many calls to {service} in flight"),
        ));
    }
    let Some(trial) = shared.admit() else {
        shared.rejected("breaker_open");
        return Ok(refusal(
            tonic::Code::Unavailable,
            crate::grpc::Refusal::CircuitOpen,
            &format!("{service} is failing; calls to it are paused for a moment (circuit open)"),
        ));
    };
    let mut outcome = Outcome {
        shared: &shared,
        trial,
        reported: false,
    };
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let _slot = Slot(&shared.in_flight);
    shared.deposit_retry_tokens();

    if comb_contracts::CLIENT_STREAMING_METHODS.contains(&rpc) {
        return stream_to_one(&shared, request, callers_time, deadline, outcome).await;
    }
    let retry_safe = comb_contracts::RETRY_SAFE_METHODS.contains(&rpc);
    let (parts, body) = request.into_parts();
    // Unary request bodies are small: kept, so the call can go to another instance.
    let kept = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            outcome.report(false);
            return Ok(refusal(
                tonic::Code::Internal,
                crate::grpc::Refusal::Unreadable,
                "the request body could not be read",
            ));
        }
    };

    let mut tried = HashSet::new();
    let mut attempt = 0;
    let mut next = shared.pick(&tried);
    if next.is_none() {
        next = shared.first_instance(deadline).await;
    }
    loop {
        attempt += 1;
        let Some(instance) = next.take() else {
            if tried.is_empty() {
                // None known yet (discovery has not named one in time): that says
                // nothing of the instances' health, so the breaker does not count it.
                outcome.neutral();
            } else {
                outcome.report(false);
            }
            return Ok(refusal(
                tonic::Code::Unavailable,
                crate::grpc::Refusal::NoInstance,
                &format!("no instance of {service} left to try"),
            ));
        };
        tried.insert(instance.url.clone());
        let left = deadline.saturating_duration_since(Instant::now());
        let body = tonic::body::Body::new(Full::new(Bytes::clone(&kept)));
        let mut attempt_request = http::Request::from_parts(clone_parts(&parts), body);
        if let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(left)) {
            attempt_request.headers_mut().insert(GRPC_TIMEOUT, value);
        }
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        let sent = {
            let _instance_slot = Slot(&instance.in_flight);
            tokio::time::timeout(left, instance.connection.send(attempt_request)).await
        };
        let (result, verdict) = match sent {
            Ok(result) => {
                let verdict = verdict_of(&result);
                (result, verdict)
            }
            Err(_) => (
                Ok(refusal(
                    tonic::Code::DeadlineExceeded,
                    crate::grpc::Refusal::Deadline,
                    &format!("{service} did not answer in time"),
                )),
                if caller_limited {
                    Verdict::CallerOutOfTime
                } else {
                    Verdict::TimedOut
                },
            ),
        };
        shared.record_attempt(&instance, verdict);
        let may_retry = match verdict {
            Verdict::Answered | Verdict::TimedOut | Verdict::CallerOutOfTime => false,
            Verdict::Refused | Verdict::Unreachable => true,
            Verdict::Failed => retry_safe,
        };
        let time_left =
            deadline.saturating_duration_since(Instant::now()) > Duration::from_millis(5);
        // Another instance to try, or the answer stands.
        next = if may_retry && attempt < shared.policy.max_attempts && time_left {
            shared.pick(&tried)
        } else {
            None
        };
        if next.is_some() && shared.take_retry_token() {
            metrics::counter!("comb_client_retries_total", "upstream" => service.to_string())
                .increment(1);
            let pause =
                Duration::from_millis(rand::thread_rng().gen_range(2..10) * u64::from(attempt));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            // A retry with no time left would only fail; the answer in hand stands.
            if deadline.saturating_duration_since(Instant::now()) > Duration::from_millis(5) {
                continue;
            }
        }
        if verdict == Verdict::CallerOutOfTime {
            outcome.neutral();
        } else {
            outcome.report(matches!(verdict, Verdict::Answered));
        }
        tracing::Span::current().record("attempts", attempt);
        // A call that never got an answer is the callee being unavailable, whatever broke.
        return result.map_err(|error| -> CallError {
            Box::new(tonic::Status::unavailable(format!(
                "{service} could not be reached: {error}"
            )))
        });
    }
}

/// A client-streaming call (an upload): its body is not kept, so it goes to one instance,
/// once, and is bounded by the caller's deadline only (a large file takes as long as it
/// takes); the call timeout bounds only finding an instance.
async fn stream_to_one(
    shared: &Arc<Shared>,
    request: http::Request<tonic::body::Body>,
    callers_time: Option<Duration>,
    find_by: Instant,
    mut outcome: Outcome<'_>,
) -> Result<http::Response<tonic::body::Body>, CallError> {
    let service = Arc::clone(&shared.service);
    let mut instance = shared.pick(&HashSet::new());
    if instance.is_none() {
        instance = shared.first_instance(find_by).await;
    }
    let Some(instance) = instance else {
        outcome.neutral();
        return Ok(refusal(
            tonic::Code::Unavailable,
            crate::grpc::Refusal::NoInstance,
            &format!("no instance of {service} to send the stream to"),
        ));
    };
    let mut request = request;
    if let Some(left) = callers_time
        && let Ok(value) = HeaderValue::from_str(&format_grpc_timeout(left))
    {
        request.headers_mut().insert(GRPC_TIMEOUT, value);
    }
    instance.in_flight.fetch_add(1, Ordering::Relaxed);
    let sent = {
        let _instance_slot = Slot(&instance.in_flight);
        match callers_time {
            Some(left) => tokio::time::timeout(left, instance.connection.send(request))
                .await
                .ok(),
            None => Some(instance.connection.send(request).await),
        }
    };
    let Some(result) = sent else {
        outcome.neutral();
        return Ok(refusal(
            tonic::Code::DeadlineExceeded,
            crate::grpc::Refusal::Deadline,
            &format!("{service} did not answer in time"),
        ));
    };
    let verdict = verdict_of(&result);
    shared.record_attempt(&instance, verdict);
    outcome.report(matches!(verdict, Verdict::Answered));
    tracing::Span::current().record("attempts", 1);
    result.map_err(|error| -> CallError {
        Box::new(tonic::Status::unavailable(format!(
            "{service} could not be reached: {error}"
        )))
    })
}

/// A copy of a request's head (extensions are not needed by the channel).
fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_grpc_statuses() {
        let response = refusal(
            tonic::Code::Unavailable,
            crate::grpc::Refusal::CircuitOpen,
            "paused: 100%",
        );
        assert_eq!(grpc_status(&response), Some(14));
        assert_eq!(response.headers()["grpc-message"], "paused: 100%25");
        assert_eq!(response.headers()["comb-refused"], "circuit-open");
        assert!(
            comb_contracts::RETRY_SAFE_METHODS.contains(&"/comb.catalog.v1.Catalog/ListProducts")
        );
        assert!(!comb_contracts::RETRY_SAFE_METHODS.contains(&"/comb.cart.v1.Cart/AddItem"));
    }
}
