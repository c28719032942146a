//! Fault injection, for chaos experiments: extra latency and a share of failed requests,
//! set at runtime on a running instance with `PUT /_comb/faults` (and removed with
//! `DELETE`). Only instances started with the `fault_injection` setting and a
//! `fault_token` have it, and the endpoint answers only a request carrying that token in
//! [`TOKEN_HEADER`] (anything else is told there is no such route). `comb up` turns it on
//! with a token of its own for each system (which `comb chaos` reads from the data
//! directory) unless `COMB_FAULT_INJECTION=false`; a production deployment leaves it off.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::problem::{FieldError, Problem};
use crate::telemetry::is_grpc;

/// The path of the control endpoint.
pub const FAULTS_PATH: &str = "/_comb/faults";

/// The header that carries the fault token (under `comb up`, the system's operator token).
pub const TOKEN_HEADER: &str = "x-comb-operator-token";

/// The shortest fault token accepted: a guessable one would hand the instance to anyone.
pub const MIN_TOKEN_LEN: usize = 16;

/// What is injected into every request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Added before each request is handled.
    #[serde(default)]
    pub latency_ms: u64,
    /// The share of requests answered with an error instead (0 to 1).
    #[serde(default)]
    pub error_rate: f64,
}

/// The faults of one instance, shared by its middleware and control endpoint.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultPlan>>);

impl Faults {
    fn plan(&self) -> FaultPlan {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, plan: FaultPlan) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = plan;
    }
}

/// Injects `faults` into every request to `routes`.
pub fn inject(routes: Router, faults: Faults) -> Router {
    routes.layer(axum::middleware::from_fn_with_state(faults, apply))
}

/// `GET`, `PUT` and `DELETE` of [`FAULTS_PATH`], for requests carrying `token`.
pub fn control_routes(faults: Faults, token: &str) -> Router {
    let token: Arc<[u8]> = token.as_bytes().into();
    Router::new()
        .route(FAULTS_PATH, get(show).put(replace).delete(remove))
        .with_state(faults)
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let token = Arc::clone(&token);
                async move {
                    let presented = request
                        .headers()
                        .get(TOKEN_HEADER)
                        .map_or(&[][..], |value| value.as_bytes());
                    if !same_secret(presented, &token) {
                        return Problem::not_found(format!("no route for {FAULTS_PATH}"))
                            .into_response();
                    }
                    next.run(request).await
                }
            },
        ))
}

/// Compares secrets in a time that does not depend on where they differ (every operator
/// secret comb checks goes through here).
pub fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

async fn apply(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let plan = faults.plan();
    if plan.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(plan.latency_ms)).await;
    }
    if plan.error_rate > 0.0 && rand::thread_rng().gen_bool(plan.error_rate.clamp(0.0, 1.0)) {
        metrics::counter!("comb_faults_injected_total").increment(1);
        return injected_error(is_grpc(&request));
    }
    next.run(request).await
}

fn injected_error(grpc: bool) -> Response {
    if grpc {
        return crate::grpc::trailers_only(
            axum::body::Body::empty(),
            tonic::Code::Unavailable,
            "injected fault",
        );
    }
    Problem::unavailable("injected fault (comb chaos)").into_response()
}

async fn show(State(faults): State<Faults>) -> Response {
    axum::Json(faults.plan()).into_response()
}

async fn replace(State(faults): State<Faults>, body: Bytes) -> Response {
    let plan: FaultPlan = match serde_json::from_slice(&body) {
        Ok(plan) => plan,
        Err(error) => {
            return Problem::bad_request(format!(
                "the body must be JSON like {{\"latency_ms\": 500, \"error_rate\": 0.1}}: {error}"
            ))
            .into_response();
        }
    };
    let mut errors = Vec::new();
    if plan.latency_ms > 60_000 {
        errors.push(FieldError::new("latency_ms", "must be at most 60000"));
    }
    if !(0.0..=1.0).contains(&plan.error_rate) {
        errors.push(FieldError::new("error_rate", "must be between 0 and 1"));
    }
    if !errors.is_empty() {
        return Problem::invalid(errors).into_response();
    }
    tracing::warn!(
        latency_ms = plan.latency_ms,
        error_rate = plan.error_rate,
        "faults injected"
    );
    faults.set(plan);
    axum::Json(plan).into_response()
}

async fn remove(State(faults): State<Faults>) -> Response {
    tracing::info!("faults removed");
    faults.set(FaultPlan::default());
    axum::Json(FaultPlan::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const TOKEN: &str = "0123456789abcdef0123";

    fn app(faults: &Faults) -> Router {
        inject(
            Router::new().route("/x", get(|| async { "ok" })),
            faults.clone(),
        )
        .merge(control_routes(faults.clone(), TOKEN))
    }

    async fn send(app: &Router, method: &str, path: &str, body: &str) -> (u16, String) {
        send_with(app, method, path, body, Some(TOKEN)).await
    }

    async fn send_with(
        app: &Router,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let mut request = http::Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        let request = request
            .body(axum::body::Body::from(body.to_owned()))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("an answer");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn faults_are_set_applied_and_removed_at_runtime() {
        let faults = Faults::default();
        let app = app(&faults);
        assert_eq!(send(&app, "GET", "/x", "").await.0, 200);
        let (status, _) = send(
            &app,
            "PUT",
            FAULTS_PATH,
            r#"{"error_rate": 1.0, "latency_ms": 20}"#,
        )
        .await;
        assert_eq!(status, 200);
        let started = std::time::Instant::now();
        let (status, body) = send(&app, "GET", "/x", "").await;
        assert_eq!(status, 503);
        assert!(body.contains("injected fault"));
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(
            send(&app, "GET", FAULTS_PATH, "").await.1,
            r#"{"latency_ms":20,"error_rate":1.0}"#
        );
        assert_eq!(send(&app, "DELETE", FAULTS_PATH, "").await.0, 200);
        assert_eq!(send(&app, "GET", "/x", "").await.0, 200);
    }

    #[tokio::test]
    async fn without_the_token_there_is_no_fault_endpoint() {
        let faults = Faults::default();
        let app = app(&faults);
        for token in [None, Some(""), Some("0123456789abcdef0124"), Some("0123")] {
            for method in ["GET", "PUT", "DELETE"] {
                let (status, _) =
                    send_with(&app, method, FAULTS_PATH, r#"{"error_rate": 1}"#, token).await;
                assert_eq!(status, 404, "{method} with {token:?}");
            }
        }
        assert_eq!(faults.plan(), FaultPlan::default(), "nothing was injected");
        assert_eq!(send_with(&app, "GET", "/x", "", None).await.0, 200);
    }

    #[tokio::test]
    async fn bad_plans_are_refused_with_the_field_named() {
        let faults = Faults::default();
        let app = app(&faults);
        let (status, body) = send(&app, "PUT", FAULTS_PATH, r#"{"error_rate": 2}"#).await;
        assert_eq!(status, 400);
        assert!(body.contains("error_rate"), "{body}");
        let (status, body) = send(&app, "PUT", FAULTS_PATH, r#"{"latency": 5}"#).await;
        assert_eq!(status, 400);
        assert!(body.contains("latency_ms"), "{body}");
        assert_eq!(faults.plan(), FaultPlan::default());
    }
}
