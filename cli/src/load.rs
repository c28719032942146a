//! `comb load`: a realistic shopper mix against the gateway. Guests browse, search, view
//! products, add to their carts, check out with the sandbox card and look at their orders.
//!
//! Closed loop (`--users N`): N shoppers, each doing one thing after another. Open loop
//! (`--rate R`): R operations a second at fixed intended start times, whatever the system
//! does; each latency is measured from the intended start, so a stall shows as the wait it
//! caused and not as one slow request (no coordinated omission, as wrk2 does). Latencies go
//! into HDR histograms; a progress line each second, then a table per operation (or
//! `--json`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::DataDirArg;
use crate::chaos::parse_duration;
use crate::cpu::{CpuSnapshot, CpuUse};
use crate::launcher::control::{fetch_status, running_launcher};
use crate::launcher::plan::Layout;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The gateway to load; by default the one of the system running from --data-dir,
    /// else http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
    /// Shoppers in a closed loop.
    #[arg(long, default_value_t = 10)]
    pub users: u32,
    /// Operations per second in an open loop (instead of --users).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to run, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long to take to reach full load.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub ramp_up: Duration,
    /// The mix, as weights: browse, search, product, add_to_cart, checkout, orders.
    #[arg(
        long,
        default_value = "browse=30,search=15,product=30,add_to_cart=12,checkout=8,orders=5"
    )]
    pub mix: String,
    /// Instead of the shopper mix, GET this path again and again (e.g.
    /// `/api/v1/products?limit=20`, `/healthz`): one endpoint's cost and latency.
    #[arg(long, value_name = "PATH", conflicts_with = "mix")]
    pub get: Option<String>,
    /// Print the summary as JSON (the progress lines still go to stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

/// What a shopper can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Browse,
    Search,
    Product,
    AddToCart,
    Checkout,
    Orders,
    /// A GET of the path given with `--get`.
    Get,
}

const OPERATIONS: [Operation; 6] = [
    Operation::Browse,
    Operation::Search,
    Operation::Product,
    Operation::AddToCart,
    Operation::Checkout,
    Operation::Orders,
];

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Search => "search",
            Self::Product => "product",
            Self::AddToCart => "add_to_cart",
            Self::Checkout => "checkout",
            Self::Orders => "orders",
            Self::Get => "get",
        }
    }
}

/// The weights of each operation.
fn parse_mix(text: &str) -> anyhow::Result<Vec<(Operation, u32)>> {
    let mut mix = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .with_context(|| format!("{part:?} in --mix is not NAME=WEIGHT"))?;
        let operation = OPERATIONS
            .into_iter()
            .find(|op| op.name() == name.trim())
            .with_context(|| {
                format!(
                    "{name:?} in --mix is not an operation; use browse, search, product, add_to_cart, checkout, orders"
                )
            })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("the weight of {name} in --mix must be a whole number"))?;
        mix.push((operation, weight));
    }
    if mix.iter().map(|(_, w)| w).sum::<u32>() == 0 {
        bail!("--mix gives every operation a weight of 0");
    }
    Ok(mix)
}

fn choose(mix: &[(Operation, u32)]) -> Operation {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut pick = rand::thread_rng().gen_range(0..total);
    for (operation, weight) in mix {
        if pick < *weight {
            return *operation;
        }
        pick -= weight;
    }
    mix[0].0
}

/// How one operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// A 4xx: the store said no (out of stock, an empty cart), not a failure.
    Rejected,
    /// A 5xx, a timeout or no answer.
    Error,
}

#[derive(Debug)]
struct Tally {
    latency_us: Histogram<u64>,
    count: u64,
    errors: u64,
    rejected: u64,
    /// Checkouts answered with a CONFIRMED order.
    confirmed: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            // 1 µs to 1 hour, 3 significant digits: constant, valid bounds.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            count: 0,
            errors: 0,
            rejected: 0,
            confirmed: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    tallies: BTreeMap<Operation, Tally>,
}

type SharedStats = Arc<Mutex<Stats>>;

fn record(stats: &SharedStats, operation: Operation, latency: Duration, outcome: Outcome) {
    record_done(stats, operation, latency, outcome, false);
}

fn record_done(
    stats: &SharedStats,
    operation: Operation,
    latency: Duration,
    outcome: Outcome,
    confirmed: bool,
) {
    let mut stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
    let tally = stats.tallies.entry(operation).or_insert_with(Tally::new);
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let _ = tally.latency_us.record(micros.min(3_600_000_000));
    tally.count += 1;
    tally.confirmed += u64::from(confirmed);
    match outcome {
        Outcome::Ok => {}
        Outcome::Rejected => tally.rejected += 1,
        Outcome::Error => tally.errors += 1,
    }
}

/// A shopper: a guest token and what it has seen.
#[derive(Debug, Clone)]
struct Shopper {
    token: String,
    cart_items: u32,
}

/// What every shopper shares: the client and the catalog's product ids.
#[derive(Debug)]
struct Store {
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
    async fn connect(gateway: String, get_path: Option<String>) -> anyhow::Result<Self> {
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

    async fn guest(&self) -> anyhow::Result<Shopper> {
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
    async fn next_visit(&self, operation: Operation, shopper: &mut Shopper) {
        if operation == Operation::Checkout
            && let Ok(fresh) = self.guest().await
        {
            *shopper = fresh;
        }
    }

    /// Does `operation` as `shopper`; true when it was a checkout answered CONFIRMED.
    async fn perform(&self, operation: Operation, shopper: &mut Shopper) -> (Outcome, bool) {
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

/// `comb load`.
pub async fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let mix = match &args.get {
        Some(path) if !path.starts_with('/') => {
            bail!("--get takes a path on the gateway starting with /, e.g. /api/v1/products")
        }
        Some(_) => vec![(Operation::Get, 1)],
        None => parse_mix(&args.mix)?,
    };
    if args.users == 0 && args.rate.is_none() {
        bail!("--users must be at least 1");
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        bail!("--rate must be a positive number of operations per second");
    }
    let layout = Layout::new(&args.data_dir.data_dir)?;
    let local = running_launcher(&layout)?;
    // The control API knows the gateway's address as soon as the gateway reported it.
    let local_gateway = match &local {
        Some(state) => fetch_status(state)
            .await
            .ok()
            .and_then(|status| status.gateway_url)
            .or_else(|| state.gateway_url.clone()),
        None => None,
    };
    let gateway = match &args.gateway {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => local_gateway
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
    };
    // Whose CPU to count: the system running from --data-dir, when it is the one loaded.
    let system = local.filter(|_| local_gateway.as_deref() == Some(gateway.as_str()));
    let store = Arc::new(Store::connect(gateway.clone(), args.get.clone()).await?);
    let stats: SharedStats = Arc::default();
    // Open-loop shoppers sign in before the clock starts, so setup is not counted as wait.
    let pool = match args.rate {
        Some(_) => shopper_pool(&store, SHOPPER_POOL).await?,
        None => Vec::new(),
    };
    let cpu_before = match &system {
        Some(state) => Some(CpuSnapshot::of(&fetch_status(state).await?)),
        None => None,
    };
    let started = Instant::now();
    let end = started + args.duration;
    let progress =
        (!args.quiet).then(|| tokio::spawn(report_progress(Arc::clone(&stats), started, end)));

    match args.rate {
        None => closed_loop(&args, &store, &mix, &stats, started, end).await?,
        Some(rate) => open_loop(&args, rate, &store, &mix, &stats, pool, started, end).await?,
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let elapsed = started.elapsed();
    let cpu = match (&system, cpu_before) {
        (Some(state), Some(before)) => {
            let after = CpuSnapshot::of(&fetch_status(state).await?);
            Some(before.used_until(&after))
        }
        _ => None,
    };
    let summary = summarize(&stats, elapsed, &args, &gateway, cpu);
    // With --json the document goes to stdout and the table to stderr, for people.
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        eprint!("{}", table(&summary));
    } else {
        print!("{}", table(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

async fn closed_loop(
    args: &LoadArgs,
    store: &Arc<Store>,
    mix: &[(Operation, u32)],
    stats: &SharedStats,
    started: Instant,
    end: Instant,
) -> anyhow::Result<()> {
    let mut shoppers = tokio::task::JoinSet::new();
    for index in 0..args.users {
        let store = Arc::clone(store);
        let stats = Arc::clone(stats);
        let mix = mix.to_vec();
        // Shoppers join evenly over the ramp-up.
        let join_at = started
            + args
                .ramp_up
                .mul_f64(f64::from(index) / f64::from(args.users));
        shoppers.spawn(async move {
            tokio::time::sleep_until(join_at).await;
            let Ok(mut shopper) = store.guest().await else {
                record(&stats, Operation::Browse, Duration::ZERO, Outcome::Error);
                return;
            };
            while Instant::now() < end {
                let operation = choose(&mix);
                let began = Instant::now();
                let (outcome, confirmed) = store.perform(operation, &mut shopper).await;
                record_done(&stats, operation, began.elapsed(), outcome, confirmed);
                store.next_visit(operation, &mut shopper).await;
            }
        });
    }
    while shoppers.join_next().await.is_some() {}
    Ok(())
}

/// The most operations in flight in an open loop; beyond it, operations wait (and their
/// wait counts in their latency).
const OPEN_LOOP_IN_FLIGHT: usize = 2_000;

/// Shoppers whose carts the open loop's stateful operations use.
const SHOPPER_POOL: usize = 256;

type ShopperPool = Vec<Arc<tokio::sync::Mutex<Shopper>>>;

async fn shopper_pool(store: &Store, size: usize) -> anyhow::Result<ShopperPool> {
    let mut pool = Vec::with_capacity(size);
    for _ in 0..size {
        pool.push(Arc::new(tokio::sync::Mutex::new(store.guest().await?)));
    }
    Ok(pool)
}

#[allow(clippy::too_many_arguments)]
async fn open_loop(
    args: &LoadArgs,
    rate: f64,
    store: &Arc<Store>,
    mix: &[(Operation, u32)],
    stats: &SharedStats,
    pool: ShopperPool,
    started: Instant,
    end: Instant,
) -> anyhow::Result<()> {
    let pool_size = pool.len().max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let mut running = tokio::task::JoinSet::new();
    let mut sent: u64 = 0;
    let ramp = args.ramp_up.as_secs_f64();
    loop {
        // The intended start of operation n: evenly spaced at the (ramping) rate.
        let offset = intended_offset(sent, rate, ramp);
        let intended = started + Duration::from_secs_f64(offset);
        if intended >= end {
            break;
        }
        tokio::time::sleep_until(intended).await;
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let store = Arc::clone(store);
        let stats = Arc::clone(stats);
        let operation = choose(mix);
        let Some(shopper) = pool
            .get(usize::try_from(sent).unwrap_or(0) % pool_size)
            .cloned()
        else {
            bail!("the open loop has no shoppers");
        };
        running.spawn(async move {
            let _permit = permit;
            // Only what changes a cart waits for its shopper; browsing never queues here.
            // Latencies count from when the operation should have started, not from when
            // it could.
            if matches!(
                operation,
                Operation::AddToCart | Operation::Checkout | Operation::Orders
            ) {
                let mut shopper = shopper.lock().await;
                let (outcome, confirmed) = store.perform(operation, &mut shopper).await;
                record_done(&stats, operation, intended.elapsed(), outcome, confirmed);
                store.next_visit(operation, &mut shopper).await;
            } else {
                let mut anonymous = Shopper {
                    token: String::new(),
                    cart_items: 0,
                };
                let (outcome, _) = store.perform(operation, &mut anonymous).await;
                record(&stats, operation, intended.elapsed(), outcome);
            }
        });
        sent += 1;
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

/// Seconds from the start at which operation `n` is due: at `rate` a second, reached
/// linearly over `ramp` seconds.
fn intended_offset(n: u64, rate: f64, ramp: f64) -> f64 {
    let n = n as f64;
    if ramp <= 0.0 {
        return n / rate;
    }
    // During the ramp the rate grows as rate·t/ramp, so n(t) = rate·t²/(2·ramp).
    let ramp_ops = rate * ramp / 2.0;
    if n < ramp_ops {
        (2.0 * ramp * n / rate).sqrt()
    } else {
        ramp + (n - ramp_ops) / rate
    }
}

async fn report_progress(stats: SharedStats, started: Instant, end: Instant) {
    let mut last_count = 0;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    while Instant::now() < end {
        ticks.tick().await;
        let (count, errors, p99) = {
            let stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
            let count: u64 = stats.tallies.values().map(|t| t.count).sum();
            let errors: u64 = stats.tallies.values().map(|t| t.errors).sum();
            let p99 = stats
                .tallies
                .values()
                .map(|t| t.latency_us.value_at_quantile(0.99))
                .max()
                .unwrap_or(0);
            (count, errors, p99)
        };
        eprintln!(
            "comb load | {:>5.0} s  {:>7.0} ops/s  {count:>8} done  {errors:>6} errors  worst p99 {:>8.1} ms",
            started.elapsed().as_secs_f64(),
            (count - last_count) as f64,
            p99 as f64 / 1000.0
        );
        last_count = count;
    }
}

/// The figures of one operation, or of all.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub count: u64,
    pub errors: u64,
    pub rejected: u64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Checkouts answered with a CONFIRMED order (checkout only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<u64>,
}

/// What `comb load --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub gateway: String,
    /// `closed` (users) or `open` (rate).
    pub mode: &'static str,
    pub users: Option<u32>,
    pub rate_per_s: Option<f64>,
    pub duration_s: f64,
    pub operations: BTreeMap<String, Figures>,
    pub total: Figures,
    /// The CPU the system's processes used during the run, when the gateway loaded is the
    /// one of the system running from `--data-dir`.
    pub cpu: Option<CpuReport>,
}

/// Where the CPU of a run went.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// CPU seconds of every process of the system (instances and launcher).
    pub seconds: f64,
    /// The same, as cores kept busy on average over the run.
    pub cores: f64,
    /// The operation each figure `per_operation_us` is per: the only kind of operation the
    /// run did; null for a mix, whose CPU is reported for the whole run only.
    pub operation: Option<String>,
    /// CPU microseconds per operation, summed over the system's processes.
    pub per_operation_us: Option<f64>,
    /// For a checkout-only run: CPU microseconds per checkout answered CONFIRMED.
    pub per_confirmed_order_us: Option<f64>,
    /// Per service (and `launcher`), summed over its instances.
    pub services: BTreeMap<String, ServiceCpu>,
    /// Instances that restarted or went away during the run: their old process's last
    /// CPU is not counted.
    pub restarted: Vec<String>,
}

/// One service's share of a run's CPU.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceCpu {
    pub seconds: f64,
    pub per_operation_us: Option<f64>,
}

impl CpuReport {
    fn new(used: CpuUse, seconds: f64, operations: &BTreeMap<String, Figures>) -> Self {
        let only = match operations.len() {
            1 => operations.iter().next(),
            _ => None,
        };
        let count = only
            .map(|(_, figures)| figures.count)
            .filter(|count| *count > 0);
        let per = |cpu: f64, count: Option<u64>| count.map(|count| cpu * 1e6 / count as f64);
        let total = used.total_seconds();
        Self {
            seconds: total,
            cores: if seconds > 0.0 { total / seconds } else { 0.0 },
            operation: only.map(|(name, _)| name.clone()),
            per_operation_us: per(total, count),
            per_confirmed_order_us: per(
                total,
                only.and_then(|(_, figures)| figures.confirmed)
                    .filter(|confirmed| *confirmed > 0),
            ),
            services: used
                .services
                .into_iter()
                .map(|(service, cpu)| {
                    (
                        service,
                        ServiceCpu {
                            seconds: cpu,
                            per_operation_us: per(cpu, count),
                        },
                    )
                })
                .collect(),
            restarted: used.restarted,
        }
    }
}

fn figures(
    histogram: &Histogram<u64>,
    count: u64,
    errors: u64,
    rejected: u64,
    seconds: f64,
    confirmed: Option<u64>,
) -> Figures {
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    Figures {
        count,
        errors,
        rejected,
        throughput_per_s: if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        },
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
        confirmed,
    }
}

fn summarize(
    stats: &SharedStats,
    elapsed: Duration,
    args: &LoadArgs,
    gateway: &str,
    cpu: Option<CpuUse>,
) -> Summary {
    let stats = stats.lock().unwrap_or_else(PoisonError::into_inner);
    let seconds = elapsed.as_secs_f64();
    let mut all = Tally::new();
    let mut operations = BTreeMap::new();
    for (operation, tally) in &stats.tallies {
        let _ = all.latency_us.add(&tally.latency_us);
        all.count += tally.count;
        all.errors += tally.errors;
        all.rejected += tally.rejected;
        all.confirmed += tally.confirmed;
        operations.insert(
            operation.name().to_owned(),
            figures(
                &tally.latency_us,
                tally.count,
                tally.errors,
                tally.rejected,
                seconds,
                (*operation == Operation::Checkout).then_some(tally.confirmed),
            ),
        );
    }
    let cpu = cpu.map(|used| CpuReport::new(used, seconds, &operations));
    Summary {
        gateway: gateway.to_owned(),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        users: args.rate.is_none().then_some(args.users),
        rate_per_s: args.rate,
        duration_s: seconds,
        operations,
        total: figures(
            &all.latency_us,
            all.count,
            all.errors,
            all.rejected,
            seconds,
            stats
                .tallies
                .contains_key(&Operation::Checkout)
                .then_some(all.confirmed),
        ),
        cpu,
    }
}

fn table(summary: &Summary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "comb load: {} loop, {}, {:.1} s against {}",
        summary.mode,
        match (summary.users, summary.rate_per_s) {
            (_, Some(rate)) => format!("{rate} ops/s intended"),
            (Some(users), None) => format!("{users} users"),
            (None, None) => String::new(),
        },
        summary.duration_s,
        summary.gateway
    );
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "operation",
        "count",
        "errors",
        "rejected",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "per s"
    );
    let mut row = |name: &str, f: &Figures| {
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>7} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            f.count,
            f.errors,
            f.rejected,
            f.p50_ms,
            f.p90_ms,
            f.p99_ms,
            f.p999_ms,
            f.max_ms,
            f.throughput_per_s
        );
    };
    for (name, figures) in &summary.operations {
        row(name, figures);
    }
    row("total", &summary.total);
    if let Some(confirmed) = summary.total.confirmed {
        let _ = writeln!(
            out,
            "confirmed orders: {confirmed} ({:.1} per s)",
            confirmed as f64 / summary.duration_s.max(f64::EPSILON)
        );
    }
    if let Some(cpu) = &summary.cpu {
        cpu_table(&mut out, cpu);
    }
    out
}

/// The CPU section of the table: per service, and per operation when the run had one kind.
fn cpu_table(out: &mut String, cpu: &CpuReport) {
    use std::fmt::Write as _;
    let per = match (&cpu.operation, cpu.per_operation_us) {
        (Some(operation), Some(us)) => format!("; {us:.0} µs per {operation}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "\nCPU of the system's processes: {:.2} s ({:.2} cores){per}",
        cpu.seconds, cpu.cores
    );
    if let Some(us) = cpu.per_confirmed_order_us {
        let _ = writeln!(out, "  {us:.0} µs per confirmed order");
    }
    let unit = match &cpu.operation {
        Some(operation) if cpu.per_operation_us.is_some() => format!("µs per {operation}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>7} {:>14}",
        "service", "cpu s", "share", unit
    );
    let mut services: Vec<_> = cpu.services.iter().collect();
    services.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    for (service, used) in services {
        let share = if cpu.seconds > 0.0 {
            used.seconds / cpu.seconds * 100.0
        } else {
            0.0
        };
        let per = used
            .per_operation_us
            .map_or_else(String::new, |us| format!("{us:.0}"));
        let _ = writeln!(
            out,
            "{service:<16} {:>8.2} {:>6.0}% {per:>14}",
            used.seconds, share
        );
    }
    if !cpu.restarted.is_empty() {
        let _ = writeln!(
            out,
            "restarted during the run (their earlier process is not counted): {}",
            cpu.restarted.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_read_and_checked() {
        let mix = parse_mix("browse=3, checkout=1").expect("a mix");
        assert_eq!(mix, [(Operation::Browse, 3), (Operation::Checkout, 1)]);
        assert!(parse_mix("dance=1").is_err());
        assert!(parse_mix("browse").is_err());
        assert!(parse_mix("browse=0").is_err());
        let only = parse_mix("orders=5,browse=0").expect("a mix");
        assert!((0..50).all(|_| choose(&only) == Operation::Orders));
    }

    #[test]
    fn open_loop_starts_are_evenly_spaced_after_a_linear_ramp() {
        assert!((intended_offset(10, 100.0, 0.0) - 0.1).abs() < 1e-9);
        // 100/s reached over 2 s: 100 operations during the ramp, the 100th at 2 s.
        assert!((intended_offset(100, 100.0, 2.0) - 2.0).abs() < 1e-9);
        assert!((intended_offset(25, 100.0, 2.0) - 1.0).abs() < 1e-9);
        assert!((intended_offset(200, 100.0, 2.0) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn figures_come_from_the_histogram() {
        let mut histogram = Histogram::<u64>::new(3).expect("histogram");
        for micros in 1..=1000u64 {
            histogram.record(micros * 1000).expect("recorded");
        }
        let figures = figures(&histogram, 1000, 3, 2, 10.0, None);
        assert!((figures.p50_ms - 500.0).abs() < 1.0, "{figures:?}");
        assert!((figures.p99_ms - 990.0).abs() < 1.0, "{figures:?}");
        assert_eq!(figures.throughput_per_s, 100.0);
        assert_eq!(figures.errors, 3);
    }
}
