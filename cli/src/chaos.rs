//! `comb chaos`: breaks a running system on purpose and checks what must survive.
//! - `kill` SIGKILLs a random instance at an interval (the supervisor restarts it);
//! - `inject` adds latency or errors to every instance of a service at runtime, `clear`
//!   removes them;
//! - `check` reads the services' own databases and reports, as a table, whether every
//!   accepted order is terminal, payments reconcile with orders (no double charge), stock
//!   reconciles with confirmed orders (no oversell), and the events were delivered exactly
//!   once in effect (one confirmation message and one sales record per confirmed order).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comb_inventory::store::{InventoryStore, Reservation, Status as ReservationStatus};
use comb_kit::storage::Database;
use comb_orders::store::{Order, OrderStatus, OrderStore, Step};
use comb_payments::store::{Payment, PaymentStore, Status as PaymentStatus};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::seq::SliceRandom;

use crate::DataDirArg;
use crate::launcher::control::{LauncherState, fetch_status, running_launcher};
use crate::launcher::plan::Layout;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    pub action: ChaosAction,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, Subcommand)]
pub enum ChaosAction {
    /// Kill a random instance (SIGKILL) at an interval; the supervisor restarts it.
    Kill {
        /// Time between kills, e.g. 2s or 500ms.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        every: Duration,
        /// How long to go on, e.g. 60s.
        #[arg(long = "for", default_value = "60s", value_parser = parse_duration)]
        duration: Duration,
        /// Only instances of these services (comma-separated); by default those of every
        /// service that runs more than one instance.
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
    },
    /// Make every instance of a service slow or failing, until `comb chaos clear`.
    Inject {
        service: String,
        /// Extra latency per request, e.g. 300ms.
        #[arg(long, value_parser = parse_duration)]
        latency: Option<Duration>,
        /// The share of requests that fail, 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        errors: f64,
    },
    /// Remove injected faults from every instance of a service.
    Clear { service: String },
    /// Check the invariants over the services' data; exits 1 if one is broken.
    Check {
        /// How long to wait for in-flight sagas and events to settle.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        settle: Duration,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `500ms`, `2s`, `1m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 500ms, 2s or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => return Err(format!("unknown unit {other:?}; use ms, s or m")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The running system's operator token, which `comb up` wrote to the data directory.
fn operator_token(layout: &Layout) -> anyhow::Result<String> {
    let file = layout.operator_token_file();
    let token = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read the system's operator token {} (written by comb up; run comb as the user who started it)",
            file.display()
        )
    })?;
    Ok(token.trim().to_owned())
}

async fn launcher(data_dir: &DataDirArg) -> anyhow::Result<LauncherState> {
    let layout = Layout::new(&data_dir.data_dir)?;
    running_launcher(&layout)?.with_context(|| {
        format!(
            "comb is not running from {} (start it with `comb up`, or pass its --data-dir)",
            layout.root.display()
        )
    })
}

pub async fn chaos(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let state = launcher(&args.data_dir).await?;
    let layout = Layout::new(&args.data_dir.data_dir)?;
    match args.action {
        ChaosAction::Kill {
            every,
            duration,
            services,
        } => kill_loop(&state, every, duration, &services).await,
        ChaosAction::Inject {
            service,
            latency,
            errors,
        } => {
            if !(0.0..=1.0).contains(&errors) {
                bail!("--errors must be between 0 and 1, not {errors}");
            }
            let plan = serde_json::json!({
                "latency_ms": latency.map_or(0, |l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
                "error_rate": errors,
            });
            set_faults(&state, &layout, &service, Some(plan)).await
        }
        ChaosAction::Clear { service } => set_faults(&state, &layout, &service, None).await,
        ChaosAction::Check { settle, json } => check(&state, &layout, settle, json).await,
    }
}

async fn kill_loop(
    state: &LauncherState,
    every: Duration,
    duration: Duration,
    services: &[String],
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(every).await;
        let status = fetch_status(state).await?;
        let mut replicas: HashMap<&str, usize> = HashMap::new();
        for instance in &status.instances {
            *replicas.entry(instance.service.as_str()).or_default() += 1;
        }
        let candidates: Vec<_> = status
            .instances
            .iter()
            .filter(|instance| {
                if services.is_empty() {
                    replicas[instance.service.as_str()] > 1
                } else {
                    services.contains(&instance.service)
                }
            })
            .filter_map(|instance| instance.pid.map(|pid| (instance.instance.clone(), pid)))
            .collect();
        let Some((name, pid)) = candidates.choose(&mut rand::thread_rng()).cloned() else {
            eprintln!("comb chaos | no running instance to kill; waiting");
            continue;
        };
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok() {
            kills += 1;
            println!(
                "comb chaos | {:>5.1} s  killed {name} (pid {pid})",
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "comb chaos | {kills} instances killed in {:.0} s",
        duration.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn set_faults(
    state: &LauncherState,
    layout: &Layout,
    service: &str,
    plan: Option<serde_json::Value>,
) -> anyhow::Result<ExitCode> {
    let status = fetch_status(state).await?;
    let instances: Vec<_> = status
        .instances
        .iter()
        .filter(|instance| instance.service == service)
        .collect();
    if instances.is_empty() {
        bail!("no instance of {service:?} is running");
    }
    let token = operator_token(layout)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    for instance in instances {
        let url = format!(
            "http://{}{}",
            instance.admin_address,
            comb_kit::faults::FAULTS_PATH
        );
        let request = match &plan {
            Some(plan) => client.put(&url).json(plan),
            None => client.delete(&url),
        }
        .header(comb_kit::faults::TOKEN_HEADER, token.as_str());
        let response = request
            .send()
            .await
            .with_context(|| format!("{} does not answer", instance.instance))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            bail!(
                "{} does not take injected faults (it was started without the fault_injection setting, e.g. under COMB_FAULT_INJECTION=false)",
                instance.instance
            );
        }
        let text = response.text().await.unwrap_or_default();
        println!("comb chaos | {}: {text}", instance.instance);
    }
    Ok(ExitCode::SUCCESS)
}

/// One invariant's verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub invariant: &'static str,
    pub ok: bool,
    pub detail: String,
}

async fn pool(databases: &BTreeMap<String, String>, service: &str) -> anyhow::Result<Database> {
    let url = databases
        .get(service)
        .with_context(|| format!("the launcher names no database for {service}"))?;
    Database::connect(url)
        .await
        .with_context(|| format!("cannot open {service}'s database {url}"))
}

async fn check(
    state: &LauncherState,
    layout: &Layout,
    settle: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let databases: BTreeMap<String, String> = reqwest::Client::new()
        .get(format!("{}/databases", state.control_url))
        .header(comb_kit::faults::TOKEN_HEADER, operator_token(layout)?)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("the launcher's database list cannot be read")?;
    let orders_db = pool(&databases, "orders").await?;
    let payments_db = pool(&databases, "payments").await?;
    let inventory_db = pool(&databases, "inventory").await?;
    let notifications_db = pool(&databases, "notifications").await?;
    let reports_db = pool(&databases, "reports").await?;

    // Sagas still running and events still travelling settle first.
    let started = Instant::now();
    let verdicts = loop {
        let verdicts = verdicts(
            &orders_db,
            &payments_db,
            &inventory_db,
            &notifications_db,
            &reports_db,
        )
        .await?;
        if verdicts.iter().all(|v| v.ok) || started.elapsed() >= settle {
            break verdicts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&verdicts)?);
    } else {
        println!("{:<44} {:<6} DETAIL", "INVARIANT", "OK");
        for verdict in &verdicts {
            println!(
                "{:<44} {:<6} {}",
                verdict.invariant,
                if verdict.ok { "yes" } else { "NO" },
                verdict.detail
            );
        }
    }
    Ok(if verdicts.iter().all(|v| v.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The invariants, read through each owner's audit code (`OrderStore::all`,
/// `PaymentStore::all`, `InventoryStore::reservations`, ...), so that a change to a
/// service's schema that would break the check fails to compile instead.
async fn verdicts(
    orders_db: &Database,
    payments_db: &Database,
    inventory_db: &Database,
    notifications_db: &Database,
    reports_db: &Database,
) -> anyhow::Result<Vec<Verdict>> {
    let order_store = OrderStore::new(orders_db.clone());
    let orders = order_store.all().await?;
    let confirmed = orders
        .iter()
        .filter(|o| o.status == OrderStatus::Confirmed)
        .count();
    let cancelled = orders
        .iter()
        .filter(|o| o.status == OrderStatus::Cancelled)
        .count();
    let mut verdicts = Vec::new();

    let unfinished: Vec<&str> = orders
        .iter()
        .filter(|o| o.step != Step::Done || o.status == OrderStatus::Pending)
        .map(|o| o.id.as_str())
        .collect();
    verdicts.push(Verdict {
        invariant: "every accepted order is terminal",
        ok: unfinished.is_empty(),
        detail: format!(
            "{} orders: {confirmed} confirmed, {cancelled} cancelled, {} unfinished{}",
            orders.len(),
            unfinished.len(),
            sample(&unfinished)
        ),
    });

    let payments: HashMap<String, Payment> = PaymentStore::new(payments_db.clone())
        .all()
        .await?
        .into_iter()
        .map(|payment| (payment.payment_id.clone(), payment))
        .collect();
    let charged = |payment: &Payment| {
        matches!(
            payment.status,
            PaymentStatus::Captured | PaymentStatus::Authorized
        )
    };
    let mut charge_problems = Vec::new();
    for order in &orders {
        let payment = payments.get(&order.id);
        match order.status {
            OrderStatus::Confirmed => match payment {
                Some(payment)
                    if payment.status == PaymentStatus::Captured
                        && payment.amount_minor == order.total_minor => {}
                other => charge_problems.push(format!(
                    "{} confirmed but payment {:?}",
                    order.id,
                    other.map(|p| (p.status.as_str(), p.amount_minor))
                )),
            },
            OrderStatus::Cancelled if payment.is_some_and(charged) => {
                charge_problems.push(format!("{} cancelled but still charged", order.id))
            }
            _ => {}
        }
    }
    let order_ids: std::collections::HashSet<&str> = orders.iter().map(|o| o.id.as_str()).collect();
    for (id, payment) in &payments {
        if !order_ids.contains(id.as_str()) && charged(payment) {
            charge_problems.push(format!("payment {id} charged with no order"));
        }
    }
    let captured = payments
        .values()
        .filter(|p| p.status == PaymentStatus::Captured)
        .count();
    verdicts.push(Verdict {
        invariant: "payments reconcile with orders (no double charge)",
        ok: charge_problems.is_empty(),
        detail: format!(
            "{} payments, {captured} captured for {confirmed} confirmed orders{}",
            payments.len(),
            sample(&charge_problems)
        ),
    });

    let inventory = InventoryStore::new(inventory_db.clone());
    let reservations: HashMap<String, Reservation> = inventory
        .reservations()
        .await?
        .into_iter()
        .map(|reservation| (reservation.order_id.clone(), reservation))
        .collect();
    let negative = inventory.skus_below_zero().await?;
    let mut stock_problems = Vec::new();
    if negative > 0 {
        stock_problems.push(format!("{negative} SKUs below zero"));
    }
    for order in &orders {
        let reservation = reservations.get(&order.id);
        let status = reservation.map(|r| r.status.as_str());
        match order.status {
            // Downloads take no stock: an order of downloads only reserves nothing.
            OrderStatus::Confirmed
                if !order.ships()
                    && reservation.is_some_and(|r| r.status == ReservationStatus::Committed) =>
            {
                stock_problems.push(format!("{} holds only downloads, yet took stock", order.id));
            }
            OrderStatus::Confirmed if !order.ships() => {}
            OrderStatus::Confirmed => {
                let wanted = quantities(order.physical_lines().map(|l| (&l.sku, l.quantity)));
                match reservation {
                    Some(reservation) if reservation.status == ReservationStatus::Committed => {
                        let held =
                            quantities(reservation.lines.iter().map(|l| (&l.sku, l.quantity)));
                        if held != wanted {
                            stock_problems
                                .push(format!("{} confirmed, committed lines differ", order.id));
                        }
                    }
                    _ => stock_problems.push(format!("{} confirmed, stock {status:?}", order.id)),
                }
            }
            // A refund gives the money back, not the goods: what shipped stays sold.
            OrderStatus::Cancelled if order.cancel_reason == "refunded" => {}
            OrderStatus::Cancelled
                if reservation.is_some_and(|r| {
                    matches!(
                        r.status,
                        ReservationStatus::Reserved | ReservationStatus::Committed
                    )
                }) =>
            {
                stock_problems.push(format!("{} cancelled, stock still {status:?}", order.id));
            }
            _ => {}
        }
    }
    let committed = reservations
        .values()
        .filter(|r| r.status == ReservationStatus::Committed)
        .count();
    verdicts.push(Verdict {
        invariant: "stock reconciles with confirmed orders (no oversell)",
        ok: stock_problems.is_empty(),
        detail: format!(
            "{committed} reservations committed for {confirmed} confirmed orders{}",
            sample(&stock_problems)
        ),
    });

    // Each confirmed order published one confirmation event (in the step's transaction);
    // its effect must be in notifications and in reports exactly once, by event id.
    let confirmation_of = order_store.confirmation_events().await?;
    let messaged = comb_notifications::confirmation_messages(notifications_db).await?;
    let reported = comb_reports::archived_confirmations(reports_db).await?;
    let mut event_problems = Vec::new();
    // A refunded order was confirmed first: its confirmation counts like the others'.
    let was_confirmed =
        |o: &&Order| o.status == OrderStatus::Confirmed || o.cancel_reason == "refunded";
    for order in orders.iter().filter(was_confirmed) {
        let Some(event) = confirmation_of.get(&order.id) else {
            event_problems.push(format!("{} confirmed without a published event", order.id));
            continue;
        };
        for (effect, counts) in [
            ("confirmation messages", &messaged),
            ("sales records", &reported),
        ] {
            let seen = counts.get(event).copied().unwrap_or(0);
            if seen != 1 {
                event_problems.push(format!("{}: {seen} {effect}", order.id));
            }
        }
    }
    let sales = comb_reports::orders_in_sales(reports_db).await?;
    let expected = i64::try_from(orders.iter().filter(was_confirmed).count()).unwrap_or(i64::MAX);
    if sales != expected {
        event_problems.push(format!("the sales reports count {sales} orders"));
    }
    verdicts.push(Verdict {
        invariant: "events delivered exactly once in effect",
        ok: event_problems.is_empty(),
        detail: format!(
            "{confirmed} confirmed orders: {} confirmation messages, {} sales records, {sales} orders in sales reports{}",
            messaged.values().sum::<i64>(),
            reported.values().sum::<i64>(),
            sample(&event_problems)
        ),
    });
    Ok(verdicts)
}

/// Quantities by SKU, lines of one SKU added up.
fn quantities<'a>(lines: impl Iterator<Item = (&'a String, i64)>) -> BTreeMap<&'a str, i64> {
    lines.fold(BTreeMap::new(), |mut by_sku, (sku, quantity)| {
        *by_sku.entry(sku.as_str()).or_default() += quantity;
        by_sku
    })
}

fn sample(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let shown: Vec<&str> = items.iter().take(3).map(AsRef::as_ref).collect();
    format!(" (e.g. {})", shown.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
