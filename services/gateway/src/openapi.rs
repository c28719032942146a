//! The OpenAPI document's frame and the shapes every route shares.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "comb",
        description = "The public REST API of comb, an online store for books, music and video.",
        version = "1"
    ),
    tags((name = "catalog", description = "Products, categories and search")),
    components(schemas(Problem, FieldError))
)]
pub struct ApiDoc;

/// An RFC 9457 problem document, the body of every error answer
/// (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// The invalid fields, for validation errors.
    pub errors: Option<Vec<FieldError>>,
}

/// One invalid input field.
#[derive(Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}
