//! The API gateway: comb's public REST/JSON API (`/api/v1`), described by an OpenAPI 3.1
//! document at `/api/openapi.json`. It owns no data: each route calls the service that
//! owns the answer over gRPC, with a deadline, and turns every failure into problem+json.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod backend;
pub mod body;
pub mod cart;
pub mod catalog;
pub mod forwarded;
pub mod kept;
pub mod limits;
pub mod media;
pub mod messages;
pub mod openapi;
pub mod orders;
mod params;
pub mod rendered;
pub mod reports;
pub mod reviews;
pub mod sessions;
pub mod shop;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::routing::get;
use comb_kit::grpc::Upstream;

use crate::auth::Verifier;
use comb_kit::ServiceConfig;
use comb_kit::service::Service;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The deadline of a call to orders: checkout waits up to a few seconds for its saga.
const CHECKOUT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// What every gateway route needs: channels to the services it calls, built once at
/// start, and the token verifier.
#[derive(Debug, Clone)]
pub struct GatewayState {
    pub catalog: Arc<Upstream>,
    pub cart: Arc<Upstream>,
    pub inventory: Arc<Upstream>,
    pub notifications: Arc<Upstream>,
    pub orders: Arc<Upstream>,
    pub recommendations: Arc<Upstream>,
    pub reports: Arc<Upstream>,
    pub reviews: Arc<Upstream>,
    /// For the storefront's shipping quotes; without it, shipping is quoted with the order.
    pub shipping: Option<Arc<Upstream>>,
    pub users: Arc<Upstream>,
    /// Product media (uploads, jobs, files); without it, media routes answer 503.
    pub media: Option<Arc<Upstream>>,
    /// The largest master an admin may upload (`media_max_upload_bytes`).
    pub max_upload_bytes: u64,
    pub verifier: Arc<Verifier>,
    /// Catalog answers already rendered, kept while the catalog's version stands.
    pub rendered: Arc<rendered::RenderedCache>,
    /// The data versions of the services whose answers are kept.
    pub watches: kept::Watches,
    /// Answers of the catalog, reviews and recommendations, kept while current.
    pub kept: Arc<kept::Kept>,
    /// How often a client or an account may sign in and check out.
    pub limits: limits::Limits,
    /// The proxies whose forwarding headers say who the client is.
    pub proxies: Arc<forwarded::TrustedProxies>,
}

impl GatewayState {
    /// Channels to the upstream instances named in the configuration, and watches of the
    /// data versions of those whose answers are kept. Must be called inside a Tokio runtime.
    pub fn connect(config: &ServiceConfig) -> anyhow::Result<Self> {
        let catalog = Upstream::from_config(config, "catalog")?;
        let users = Arc::new(Upstream::from_config(config, "users")?);
        let cart = Upstream::from_config(config, "cart")?;
        let inventory = Upstream::from_config(config, "inventory")?;
        // A checkout waits for its saga for a moment before answering PENDING.
        let orders = Upstream::from_config_with_timeout(
            config,
            "orders",
            config.call_timeout.max(CHECKOUT_DEADLINE),
        )?;
        Ok(Self {
            catalog: Arc::new(catalog),
            cart: Arc::new(cart),
            inventory: Arc::new(inventory),
            reports: Arc::new(Upstream::from_config(config, "reports")?),
            reviews: Arc::new(Upstream::from_config(config, "reviews")?),
            shipping: if config.calls("shipping") {
                Some(Arc::new(Upstream::from_config(config, "shipping")?))
            } else {
                None
            },
            recommendations: Arc::new(Upstream::from_config(config, "recommendations")?),
            media: if config.calls("media") {
                Some(Arc::new(Upstream::from_config(config, "media")?))
            } else {
                None
            },
            max_upload_bytes: config.number(
                "media_max_upload_bytes",
                1..=u64::MAX,
                "a number of bytes",
                media::DEFAULT_MAX_UPLOAD_BYTES,
            )?,
            notifications: Arc::new(Upstream::from_config(config, "notifications")?),
            orders: Arc::new(orders),
            verifier: Arc::new(Verifier::new(
                Arc::clone(&users),
                sessions::Revocations::follow(config)?,
            )),
            users,
            rendered: Arc::default(),
            watches: kept::Watches::start(config)?,
            kept: Arc::default(),
            limits: {
                let limits = limits::Limits::new(limits::LimitSettings::from_config(config)?);
                limits.forget_idle_every_minute();
                limits
            },
            proxies: Arc::new(forwarded::TrustedProxies::from_config(config)?),
        })
    }
}

/// The gateway's routes over its upstreams; the public edge reads no body larger than its
/// routes take.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let state = GatewayState::connect(&config)?;
    comb_kit::server::stream_bodies_of(media::is_upload_path);
    Ok(Service::new(routes(state)).max_body_bytes(body::MAX_BODY_BYTES))
}

/// The public API and its OpenAPI document, which is generated from the same route list,
/// so a route cannot be served without being described.
pub fn routes(state: GatewayState) -> Router {
    let shop = shop::routes(state.clone());
    let (router, mut document) = api_router().with_state(state).split_for_parts();
    openapi::declare_shared_problems(&mut document);
    openapi::link_created_resources(&mut document);
    let router = router.layer(DefaultBodyLimit::max(body::MAX_BODY_BYTES));
    let document = Bytes::from(document.to_json().unwrap_or_else(|error| {
        tracing::error!(%error, "the OpenAPI document cannot be serialised");
        String::from("{}")
    }));
    router
        .route(
            "/api/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .merge(shop)
        .layer(axum::middleware::from_fn(browser_security))
}

/// What a browser may do with the gateway's answers: load nothing from elsewhere, run no
/// inline script, never frame a page, never guess a content type, send no referrer to other
/// sites; and keep no copy of a personal answer (a storefront page, which shows the
/// visitor's cart, or an API answer to a signed request).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn browser_security(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let personal = request.headers().contains_key(header::AUTHORIZATION)
        || request.headers().contains_key(header::COOKIE)
        || request.uri().path() == "/"
        || request.uri().path().starts_with("/shop");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if personal && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn api_router() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(catalog::list_products))
        .routes(routes!(catalog::get_product))
        .routes(routes!(catalog::recommendations))
        .routes(routes!(reviews::list_reviews, reviews::post_review))
        .routes(routes!(catalog::search_products))
        .routes(routes!(catalog::list_categories))
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::guest))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::jwks))
        .routes(routes!(cart::get_cart))
        .routes(routes!(cart::add_item))
        .routes(routes!(cart::set_quantity, cart::remove_item))
        .routes(routes!(orders::place_order, orders::list_orders))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::order_downloads))
        .routes(routes!(orders::refund_order))
        .routes(routes!(messages::list_messages))
        .routes(routes!(admin::create_product))
        .routes(routes!(admin::update_product))
        .routes(routes!(admin::set_stock))
        .routes(routes!(reports::sales))
        .routes(routes!(reports::sales_csv))
        .routes(routes!(media::upload))
        .routes(routes!(media::list_jobs))
        .routes(routes!(media::get_job))
        .routes(routes!(media::retry_job))
        .routes(routes!(media::cancel_job))
        .routes(routes!(media::file))
}

/// The OpenAPI document of the public API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document = api_router().into_openapi();
    openapi::declare_shared_problems(&mut document);
    openapi::link_created_resources(&mut document);
    document
}
