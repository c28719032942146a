//! CPU time of the processes of a running system, read from `/proc`: what `comb status`
//! shows for each instance, and what `comb load` divides among the operations it sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::launcher::control::SystemStatus;

/// User plus system CPU time a process has used so far, in seconds; `None` when the
/// process is gone or `/proc` is not there (not Linux).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The
/// command name (field 2) is in parentheses and may hold spaces, so fields are counted
/// from the last `)`.
fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // After the name come the state (field 3) and eleven more before utime.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // USER_HZ: what Linux reports /proc times in on every common architecture.
        _ => 100.0,
    }
}

/// The CPU time of every process of a system at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    /// Instance name → (service, pid, CPU seconds).
    instances: BTreeMap<String, (String, u32, f64)>,
    launcher: Option<(u32, f64)>,
}

impl CpuSnapshot {
    /// The CPU time of the launcher and of each instance, as `status` reports them.
    pub fn of(status: &SystemStatus) -> Self {
        let instances = status
            .instances
            .iter()
            .filter_map(|instance| {
                Some((
                    instance.instance.clone(),
                    (
                        instance.service.clone(),
                        instance.pid?,
                        instance.cpu_seconds?,
                    ),
                ))
            })
            .collect();
        let launcher = status
            .launcher_cpu_seconds
            .map(|seconds| (status.launcher_pid, seconds));
        Self {
            instances,
            launcher,
        }
    }

    /// The CPU each service (and the launcher) used from `self` to `later`. An instance
    /// that restarted in between counts what its new process used; one that is gone
    /// counts nothing, and both are named in `restarted`.
    pub fn used_until(&self, later: &Self) -> CpuUse {
        let mut services: BTreeMap<String, f64> = BTreeMap::new();
        let mut restarted = Vec::new();
        for (instance, (service, pid, seconds)) in &later.instances {
            let before = match self.instances.get(instance) {
                Some((_, before_pid, before)) if before_pid == pid => *before,
                _ => {
                    restarted.push(instance.clone());
                    0.0
                }
            };
            *services.entry(service.clone()).or_default() += (seconds - before).max(0.0);
        }
        restarted.extend(
            self.instances
                .keys()
                .filter(|instance| !later.instances.contains_key(*instance))
                .cloned(),
        );
        if let (Some((pid, before)), Some((later_pid, after))) = (self.launcher, later.launcher)
            && pid == later_pid
        {
            services.insert(LAUNCHER.to_owned(), (after - before).max(0.0));
        }
        CpuUse {
            services,
            restarted,
        }
    }
}

/// The name the launcher's own CPU is reported under.
pub const LAUNCHER: &str = "launcher";

/// CPU seconds used per service over a stretch of time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Service (or `launcher`) → CPU seconds, summed over its instances.
    pub services: BTreeMap<String, f64>,
    /// Instances that restarted or went away meanwhile: what their old process used last
    /// is not counted.
    pub restarted: Vec<String>,
}

impl CpuUse {
    pub fn total_seconds(&self) -> f64 {
        self.services.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_come_from_fields_fourteen_and_fifteen() {
        // A command name with spaces and parentheses must not shift the fields.
        let line = "4242 (comb (serve) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu(line), Some(325));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let mut spent = 0u64;
        for n in 0..2_000_000u64 {
            spent = spent.wrapping_add(n * n);
        }
        assert!(spent > 0);
        let seconds = process_cpu_seconds(std::process::id()).expect("/proc on Linux");
        assert!(seconds >= 0.0);
    }
}
