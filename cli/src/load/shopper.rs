//! One shopper against the gateway: a guest token, what it has seen, and each operation
//! of the mix as a real client makes it.

use std::time::Duration;

use anyhow::{Context, bail};
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use super::{Operation, Outcome};

/// A shopper: a guest token and what it has seen.
#[derive(Debug, Clone)]
pub(super) struct Shopper {
    pub(super) token: String,
    pub(super) cart_items: u32,
}

/// What every shopper shares: the client and the catalog's product ids.
#[derive(Debug)]
pub(super) struct Store {
    http: reqwest::Client,
    gateway: String,
    products: Vec<String>,
    /// The one path every operation GETs (`--get`), instead of the shopper mix.
    get_path: Option<String>,
}

const SEARCH_WORDS: &[&str] = &[
    "space", "love", "night", "blue", "history", "music", "war", "city", "dream", "river",
];
const KINDS: &[&str] = &["book", "music", "video"];

impl Store {
    pub(super) async fn connect(gateway: String, get_path: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()?;
        if get_path.is_some() {
            return Ok(Self {
                http,
                gateway,
                products: Vec::new(),
                get_path,
            });
        }
        let mut products = Vec::new();
        for kind in KINDS {
            let page: Value = http
                .get(format!("{gateway}/api/v1/products?kind={kind}&limit=100"))
                .send()
                .await
                .with_context(|| format!("the gateway at {gateway} does not answer"))?
                .json()
                .await
                .context("the product list cannot be read")?;
            products.extend(
                page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["id"].as_str().map(str::to_owned)),
            );
        }
        if products.is_empty() {
            bail!("the catalog at {gateway} lists no products");
        }
        let products = in_stock(&http, &gateway, products).await;
        if products.is_empty() {
            bail!(
                "every product at {gateway} is sold out: restock (PUT /api/v1/admin/stock/ID) or start a fresh system"
            );
        }
        Ok(Self {
            http,
            gateway,
            products,
            get_path: None,
        })
    }

    pub(super) async fn guest(&self) -> anyhow::Result<Shopper> {
        let guest: Value = self
            .http
            .post(format!("{}/api/v1/auth/guest", self.gateway))
            .send()
            .await?
            .json()
            .await?;
        let token = guest["token"]
            .as_str()
            .context("the guest sign-in gave no token")?
            .to_owned();
        Ok(Shopper {
            token,
            cart_items: 0,
        })
    }

    fn product(&self) -> &str {
        self.products
            .choose(&mut rand::thread_rng())
            .map_or("", String::as_str)
    }

    /// A checkout ends a visit: the shopper comes back as a new guest with an empty cart.
    /// Otherwise a cart whose order was cancelled (a line sold out meanwhile) would keep the
    /// sold-out line, and every later order from it would be cancelled too.
    pub(super) async fn next_visit(&self, operation: Operation, shopper: &mut Shopper) {
        if operation == Operation::Checkout
            && let Ok(fresh) = self.guest().await
        {
            *shopper = fresh;
        }
    }

    /// Does `operation` as `shopper`; true when it was a checkout answered CONFIRMED.
    pub(super) async fn perform(
        &self,
        operation: Operation,
        shopper: &mut Shopper,
    ) -> (Outcome, bool) {
        let gateway = &self.gateway;
        let request = match operation {
            Operation::Browse => {
                let kind = KINDS
                    .choose(&mut rand::thread_rng())
                    .copied()
                    .unwrap_or("book");
                self.http
                    .get(format!("{gateway}/api/v1/products?kind={kind}&limit=20"))
            }
            Operation::Search => {
                let word = SEARCH_WORDS
                    .choose(&mut rand::thread_rng())
                    .copied()
                    .unwrap_or("blue");
                self.http.get(format!("{gateway}/api/v1/search?q={word}"))
            }
            Operation::Product => self
                .http
                .get(format!("{gateway}/api/v1/products/{}", self.product())),
            Operation::AddToCart => self
                .http
                .post(format!("{gateway}/api/v1/cart/items"))
                .bearer_auth(&shopper.token)
                .json(&json!({"product_id": self.product(), "quantity": 1})),
            Operation::Checkout => {
                if shopper.cart_items == 0 {
                    let added = self
                        .http
                        .post(format!("{gateway}/api/v1/cart/items"))
                        .bearer_auth(&shopper.token)
                        .json(&json!({"product_id": self.product(), "quantity": 1}))
                        .send()
                        .await;
                    match outcome_of(added).await.0 {
                        Outcome::Ok => shopper.cart_items += 1,
                        other => return (other, false),
                    }
                }
                self.http
                    .post(format!("{gateway}/api/v1/orders"))
                    .bearer_auth(&shopper.token)
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({
                        "email": "load@example.com",
                        "shipping_address": {"name": "Load", "line1": "1 Bench St", "city": "Testville", "postal_code": "1000", "country": "US"},
                        "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}
                    }))
            }
            Operation::Orders => self
                .http
                .get(format!("{gateway}/api/v1/orders"))
                .bearer_auth(&shopper.token),
            Operation::Get => self.http.get(format!(
                "{gateway}{}",
                self.get_path.as_deref().unwrap_or("/")
            )),
        };
        let (outcome, body) = outcome_of(request.send().await).await;
        match (operation, outcome) {
            (Operation::AddToCart, Outcome::Ok) => shopper.cart_items += 1,
            // A placed order empties the cart; a refused one may have left it as it was.
            (Operation::Checkout, _) => shopper.cart_items = 0,
            _ => {}
        }
        let confirmed = operation == Operation::Checkout
            && outcome == Outcome::Ok
            && serde_json::from_slice::<Value>(&body)
                .is_ok_and(|order| order["status"] == "CONFIRMED");
        (outcome, confirmed)
    }
}

/// The products shoppers can buy: sold-out ones would only cancel the orders they are in
/// (a cart holding one cannot be bought at all). A product whose stock is not known stays.
async fn in_stock(http: &reqwest::Client, gateway: &str, products: Vec<String>) -> Vec<String> {
    let mut lookups = tokio::task::JoinSet::new();
    for id in products {
        let (http, url) = (http.clone(), format!("{gateway}/api/v1/products/{id}"));
        lookups.spawn(async move {
            let available = match http.get(url).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|product| product["stock"]["available"].as_i64()),
                Err(_) => None,
            };
            (id, available)
        });
    }
    let mut buyable = Vec::new();
    while let Some(looked) = lookups.join_next().await {
        if let Ok((id, available)) = looked
            && available.is_none_or(|available| available > 0)
        {
            buyable.push(id);
        }
    }
    // The same order every run, whatever order the lookups finished in.
    buyable.sort();
    buyable
}

/// How an answer ends an operation, and its body. The body is always read, as a client
/// would: a connection whose answer was left unread cannot carry the next request.
async fn outcome_of(
    result: Result<reqwest::Response, reqwest::Error>,
) -> (Outcome, axum::body::Bytes) {
    let Ok(response) = result else {
        return (Outcome::Error, axum::body::Bytes::new());
    };
    let status = response.status();
    let Ok(body) = response.bytes().await else {
        return (Outcome::Error, axum::body::Bytes::new());
    };
    let outcome = if status.is_success() {
        Outcome::Ok
    } else if status.is_client_error() {
        Outcome::Rejected
    } else {
        Outcome::Error
    };
    (outcome, body)
}
