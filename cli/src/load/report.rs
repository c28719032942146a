//! The figures of a run: latencies per operation from the HDR histograms, the CPU the
//! system's processes used, as a table or as JSON.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::CpuUse;

use super::{LoadArgs, Operation, SharedStats, Tally};

/// The figures of one operation, or of all.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Figures {
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
pub(super) struct Summary {
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
pub(super) struct CpuReport {
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
pub(super) struct ServiceCpu {
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

pub(super) fn figures(
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

pub(super) fn summarize(
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

pub(super) fn table(summary: &Summary) -> String {
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
