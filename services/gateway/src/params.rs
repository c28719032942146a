//! Path and query parameters arrive as text and are checked here, so that every mistake
//! is reported by name with what would be accepted, never as a bare 400 or 500: the
//! extractors [`ProductId`], [`OrderId`] and [`ApiQuery`] reject with a Problem.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use comb_kit::Problem;
use comb_kit::problem::FieldError;
use serde::de::DeserializeOwned;

/// The product id in a route's path. A path that cannot be read as one is a 404: there is
/// no product at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ProductId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::not_found("there is no product with that id"))?;
        Ok(Self(id))
    }
}

/// The order id in a route's path; as with [`ProductId`], an unreadable one is a 404.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for OrderId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::not_found("there is no order with that id"))?;
        Ok(Self(id))
    }
}

/// A route's query string as `T`, or a 400 problem saying why it cannot be read.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        query(Query::<T>::from_request_parts(parts, state).await).map(Self)
    }
}

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
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Page {
        #[allow(dead_code)]
        limit: u32,
    }

    async fn status_and_detail(uri: &str) -> (StatusCode, String) {
        let routes = Router::new()
            .route(
                "/products/{id}",
                get(|ProductId(id): ProductId| async move { id }),
            )
            .route(
                "/orders/{id}",
                get(|OrderId(id): OrderId| async move { id }),
            )
            .route(
                "/pages",
                get(|ApiQuery(page): ApiQuery<Page>| async move { page.limit.to_string() }),
            );
        let request = Request::get(uri).body(Body::empty()).expect("a request");
        let response = routes.oneshot(request).await.expect("an answer");
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn path_and_query_parameters_that_cannot_be_read_are_problems() {
        assert_eq!(
            status_and_detail("/products/p-1").await,
            (StatusCode::OK, "p-1".to_owned())
        );
        // Not UTF-8 once decoded: no product can live there.
        let (status, body) = status_and_detail("/products/%FF").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no product with that id"), "{body}");
        let (status, body) = status_and_detail("/orders/%FF").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no order with that id"), "{body}");

        assert_eq!(
            status_and_detail("/pages?limit=5").await,
            (StatusCode::OK, "5".to_owned())
        );
        let (status, body) = status_and_detail("/pages?limit=many").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("the query string cannot be read"), "{body}");
    }

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
