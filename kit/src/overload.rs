//! Load shedding: an instance serves at most `max_in_flight` requests at once and refuses
//! the rest at once (HTTP 503 with `Retry-After`, gRPC RESOURCE_EXHAUSTED) instead of
//! queueing them until everyone times out. A refused gRPC call was not read, so a caller
//! may safely send it to another instance.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::problem::Problem;
use crate::telemetry::is_grpc;

/// Limits `routes` to `max_in_flight` requests at a time.
pub fn limit_in_flight(routes: Router, max_in_flight: usize) -> Router {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    routes.layer(axum::middleware::from_fn_with_state(permits, shed))
}

async fn shed(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire_owned() else {
        metrics::counter!("comb_server_shed_total").increment(1);
        return overloaded(is_grpc(&request));
    };
    next.run(request).await
}

fn overloaded(grpc: bool) -> Response {
    if grpc {
        return crate::grpc::trailers_only(
            axum::body::Body::empty(),
            tonic::Code::ResourceExhausted,
            "overloaded; try another instance or retry shortly",
        );
    }
    Problem::unavailable("this instance is at capacity; retry in a moment").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn requests_beyond_the_limit_are_refused_at_once() {
        let (entered, mut entered_rx) = tokio::sync::mpsc::channel::<()>(1);
        let release = Arc::new(tokio::sync::Notify::new());
        let held = Arc::clone(&release);
        let app = limit_in_flight(
            Router::new().route(
                "/slow",
                get(move || {
                    let entered = entered.clone();
                    let held = Arc::clone(&held);
                    async move {
                        let _ = entered.send(()).await;
                        held.notified().await;
                        "done"
                    }
                }),
            ),
            1,
        );
        let request = || {
            http::Request::get("/slow")
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let first = tokio::spawn(app.clone().oneshot(request()));
        entered_rx.recv().await.expect("the first request is in");
        let refused = app.clone().oneshot(request()).await.expect("an answer");
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "1");
        let grpc = http::Request::post("/slow")
            .header("content-type", "application/grpc")
            .body(axum::body::Body::empty())
            .expect("request");
        let refused = app.clone().oneshot(grpc).await.expect("an answer");
        assert_eq!(refused.headers()["grpc-status"], "8");
        release.notify_one();
        let served = first.await.expect("joined").expect("an answer");
        assert_eq!(served.status(), 200);
    }
}
