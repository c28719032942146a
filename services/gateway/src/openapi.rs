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

/// The problem answers several routes share, each described once here and named in the
/// `responses` of every route that answers with it.
pub mod responses {
    use utoipa::IntoResponses;

    use super::Problem;

    macro_rules! problem_response {
        ($(#[doc = $doc:literal] $name:ident = $status:literal, $description:literal;)+) => {
            $(
                #[doc = $doc]
                #[derive(IntoResponses)]
                #[response(status = $status, description = $description, content_type = "application/problem+json")]
                #[allow(dead_code)]
                pub struct $name(Problem);
            )+
        };
    }

    problem_response! {
        /// The route needs a token and got none that is valid.
        Unauthorized = 401, "No valid token: none, or one that is expired, forged, malformed or logged out";
        /// The route is for admins.
        NotAdmin = 403, "The caller is not an admin";
        /// Sign-in and registration are limited per address and per account.
        TooManyAttempts = 429, "Too many attempts from this address or for this account; retry after Retry-After seconds";
        /// The product named in the path does not exist.
        NoSuchProduct = 404, "There is no product with this id";
        /// The users service answers every account route.
        AccountsUnavailable = 503, "Accounts are unavailable; retry after Retry-After seconds";
        /// A cart is priced by the catalog, so both must answer.
        CartUnavailable = 503, "The cart or the catalog is unavailable; retry after Retry-After seconds";
        /// The catalog answers every product route.
        CatalogUnavailable = 503, "The catalog is unavailable; retry after Retry-After seconds";
        /// The orders service answers the order history.
        OrdersUnavailable = 503, "Orders are unavailable; retry after Retry-After seconds";
    }
}

/// Declares, once for every operation, the problems any of them may answer with, so no
/// operation can answer with one its description leaves out:
/// - 400 when the gateway cannot read the request (parameters or body of the wrong shape),
/// - 415 when a body is not sent as JSON,
/// - 422 when the request has the documented shape but the service that owns the data
///   refuses it by a rule of its own (a card number's checksum, an unknown product),
/// - 503 when the service behind the route is unavailable.
///
/// An operation's own description of one of these wins.
pub fn declare_shared_problems(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

    let problem = |description: &str| -> RefOr<utoipa::openapi::Response> {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build(),
        )
    };
    let declare = |operation: &mut Operation| {
        let takes_body = operation.request_body.is_some();
        let responses = &mut operation.responses.responses;
        let mut add = |status: &str, description: &str| {
            responses
                .entry(status.to_owned())
                .or_insert_with(|| problem(description));
        };
        if takes_body {
            add(
                "400",
                "The body cannot be read: not JSON, a field missing or of the wrong type",
            );
            add("415", "The body is not sent as application/json");
        }
        if takes_body || !operation.parameters.as_ref().is_none_or(Vec::is_empty) {
            add(
                "422",
                "The request has the documented shape but breaks a rule of the service that owns the data; `errors` names each field",
            );
        }
        add(
            "503",
            "The service behind this route is unavailable; retry after Retry-After seconds",
        );
    };
    for item in document.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            declare(operation);
        }
    }
}

/// Links from what an operation creates or lists to the operations that read or change
/// it, so a client (or a stateful test) can follow them: a placed order, or the first of
/// the caller's orders, to the order; a cart line to changing it; a new or listed product
/// to reading it (and, for a new one, to changing it and setting its stock).
pub fn link_created_resources(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;

    /// From the answers of `METHOD path` with these statuses, link `name` to an operation,
    /// filling its `parameter` with `value` (a runtime expression).
    struct Link {
        post: bool,
        path: &'static str,
        statuses: &'static [&'static str],
        name: &'static str,
        operation_id: &'static str,
        parameter: &'static str,
        value: &'static str,
    }
    let from = |post: bool, path: &'static str, statuses: &'static [&'static str]| {
        move |name: &'static str,
              operation_id: &'static str,
              parameter: &'static str,
              value: &'static str| Link {
            post,
            path,
            statuses,
            name,
            operation_id,
            parameter,
            value,
        }
    };
    let placed = from(true, "/api/v1/orders", &["201", "202"]);
    let listed_orders = from(false, "/api/v1/orders", &["200"]);
    let cart_line = from(true, "/api/v1/cart/items", &["200"]);
    let created_product = from(true, "/api/v1/admin/products", &["201"]);
    let listed_products = from(false, "/api/v1/products", &["200"]);
    let links = [
        placed("GetOrder", "get_order", "id", "$response.body#/id"),
        listed_orders("GetOrder", "get_order", "id", "$response.body#/items/0/id"),
        cart_line(
            "SetQuantity",
            "set_quantity",
            "product_id",
            "$request.body#/product_id",
        ),
        cart_line(
            "RemoveItem",
            "remove_item",
            "product_id",
            "$request.body#/product_id",
        ),
        created_product("GetProduct", "get_product", "id", "$response.body#/id"),
        created_product(
            "UpdateProduct",
            "update_product",
            "id",
            "$response.body#/id",
        ),
        created_product("SetStock", "set_stock", "product_id", "$response.body#/id"),
        listed_products(
            "GetProduct",
            "get_product",
            "id",
            "$response.body#/items/0/id",
        ),
        listed_products(
            "ListReviews",
            "list_reviews",
            "id",
            "$response.body#/items/0/id",
        ),
    ];
    for link in links {
        let Some(operation) = document.paths.paths.get_mut(link.path).and_then(|item| {
            if link.post {
                item.post.as_mut()
            } else {
                item.get.as_mut()
            }
        }) else {
            continue;
        };
        for status in link.statuses {
            if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) {
                response.links.insert(
                    link.name.to_owned(),
                    RefOr::T(
                        LinkBuilder::new()
                            .operation_id(link.operation_id)
                            .parameter(link.parameter, link.value)
                            .build(),
                    ),
                );
            }
        }
    }
}
