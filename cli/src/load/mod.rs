//! `comb load`: a realistic shopper mix against the gateway. Guests browse, search, view
//! products, add to their carts, check out with the sandbox card and look at their orders.
//!
//! Closed loop (`--users N`): N shoppers, each doing one thing after another. Open loop
//! (`--rate R`): R operations a second at fixed intended start times, whatever the system
//! does; each latency is measured from the intended start, so a stall shows as the wait it
//! caused and not as one slow request (no coordinated omission, as wrk2 does). Latencies go
//! into HDR histograms; a progress line each second, then a table per operation (or
//! `--json`).
//!
//! The parts: [`shopper`] is what one shopper does against the gateway, [`report`] turns
//! the latencies and CPU readings into the table and the JSON.

mod report;
mod shopper;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rand::Rng;
use tokio::time::Instant;

use crate::DataDirArg;
use crate::chaos::parse_duration;
use crate::cpu::CpuSnapshot;
use crate::launcher::control::{fetch_status, running_launcher};
use crate::launcher::plan::Layout;

use self::report::{summarize, table};
use self::shopper::{Shopper, Store};

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
}
