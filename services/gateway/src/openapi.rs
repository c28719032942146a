//! The OpenAPI document's frame and the shapes every route shares.

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "comb",
        description = "The public REST API of comb, an online store for books, music and video.",
        version = "1"
    ),
    tags(
        (name = "catalog", description = "Products, categories and search"),
        (name = "accounts", description = "Registration, sign-in, guest tokens and token keys"),
        (name = "cart", description = "The caller's cart"),
        (name = "orders", description = "Checkout and order history"),
        (name = "messages", description = "The caller's mailbox"),
        (name = "admin", description = "Products and stock (role admin)")
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme routes name in `security`: a JWT from the accounts routes.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

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
