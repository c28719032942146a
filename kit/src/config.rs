//! The settings of one service instance. An instance resolves its [`ServiceConfig`] from
//! the settings the topology file gives it (the launcher reads that file) overridden by
//! `COMB_*` environment variables: the setting
//! `database_url` is `COMB_DATABASE_URL` in the environment, `upstream_catalog` is
//! `COMB_UPSTREAM_CATALOG`, and so on. The environment is passed in as a map so tests never
//! touch the process environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What can be wrong with configuration; each says which setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("setting `{key}` (environment variable {env}) has the value {value:?}: {reason}")]
    Invalid {
        key: String,
        env: String,
        value: String,
        reason: String,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default: machines read logs).
    Json,
    /// Human-readable lines, for running a service by hand.
    Text,
}

/// The resolved settings of one running service instance.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub service: String,
    pub instance: String,
    /// Where the instance serves HTTP and gRPC; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the instance serves its operator endpoints (`/metrics`, fault injection,
    /// readiness), apart from its callers: loopback on a free port unless `admin_listen`
    /// says otherwise (the pod's network in Kubernetes, where Prometheus scrapes it).
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; by default a SQLite file in the data directory.
    /// `{service}` in the setting stands for the service's name, so one topology-wide
    /// setting gives each service a database of its own.
    pub database_url: String,
    /// Base URLs of the instances of each service this one calls. An empty list (the
    /// setting present, with no address) names a service called whose instances come from
    /// discovery alone, as under `comb up`, where they bind ports of their own choosing.
    pub upstreams: BTreeMap<String, Vec<String>>,
    /// Where the instance writes the addresses it bound, once it listens, for its launcher
    /// (which gives port 0 and learns the port chosen from this file).
    pub address_file: Option<PathBuf>,
    pub log_filter: String,
    pub log_format: LogFormat,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// The deadline of a call to another service.
    pub call_timeout: Duration,
    /// When set, the instance shuts down if this process (its launcher) goes away.
    pub parent_pid: Option<u32>,
    /// Requests served at once before more are refused (503 / RESOURCE_EXHAUSTED).
    pub max_in_flight: usize,
    /// How long a peer may take over each part of a request.
    pub timeouts: Timeouts,
    /// The largest request body the instance reads (`max_body_bytes`, 16 MiB by default);
    /// bodies are read before a request takes an in-flight place, so this bounds what one
    /// request can make the instance hold.
    pub max_body_bytes: usize,
    /// Whether `PUT /_comb/faults` may inject latency and errors (for `comb chaos`).
    pub fault_injection: bool,
    /// Threads running the instance's tasks. One by default: on a machine shared by a
    /// dozen services, one thread per instance keeps every request on one core, with no
    /// hand-offs between threads; scale out with instances instead.
    pub worker_threads: usize,
    settings: BTreeMap<String, String>,
}

const ENV_PREFIX: &str = "COMB_";

/// How long a peer may take, on every listener, so a stalled or slow client holds nothing
/// for long: each has a `*_timeout_ms` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `header_timeout_ms`: from connecting, or from the previous answer on a kept-alive
    /// HTTP/1 connection, to the end of the request's headers. It is also HTTP/1's idle
    /// keep-alive timeout.
    pub header: Duration,
    /// `body_timeout_ms`: to receive the whole request body. Bodies are read before the
    /// request takes one of the instance's `max_in_flight` places.
    pub body: Duration,
    /// `request_timeout_ms`: to answer, once the body is in. Longer than the longest long
    /// poll the kit serves (30 s).
    pub request: Duration,
    /// `idle_timeout_ms`: an HTTP/2 connection with nothing sent either way for this long
    /// is closed (kept-alive calls between services stay open while they are used).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            request: Duration::from_secs(60),
            idle: Duration::from_secs(300),
        }
    }
}

impl Timeouts {
    fn from_settings(lookup: &Settings<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let millis = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            let value: Option<u64> = lookup.parse(key, "milliseconds")?;
            match value {
                None => Ok(default),
                Some(0) => {
                    Err(lookup.invalid(key, "a timeout of 0 ms refuses everything; use at least 1"))
                }
                Some(ms) => Ok(Duration::from_millis(ms)),
            }
        };
        let timeouts = Self {
            header: millis("header_timeout_ms", defaults.header)?,
            body: millis("body_timeout_ms", defaults.body)?,
            request: millis("request_timeout_ms", defaults.request)?,
            idle: millis("idle_timeout_ms", defaults.idle)?,
        };
        let longest_poll = Duration::from_millis(u64::from(crate::versions::MAX_WAIT_MS));
        if timeouts.request <= longest_poll {
            return Err(lookup.invalid(
                "request_timeout_ms",
                "must be longer than 30000: long polls wait up to 30 s",
            ));
        }
        Ok(timeouts)
    }
}

impl ServiceConfig {
    /// Resolves an instance's settings: `file_settings` (from the topology) overridden by
    /// `COMB_*` variables in `env`.
    pub fn resolve<I, K, V>(
        service: &str,
        file_settings: BTreeMap<String, String>,
        env: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut settings: BTreeMap<String, String> = file_settings
            .into_iter()
            .map(|(key, value)| (key.to_ascii_lowercase(), value))
            .collect();
        for (key, value) in env {
            if let Some(name) = key.as_ref().strip_prefix(ENV_PREFIX) {
                settings.insert(name.to_ascii_lowercase(), value.into());
            }
        }
        let lookup = Settings(&settings);

        let instance = lookup
            .get("instance")
            .map_or_else(|| format!("{service}-1"), str::to_owned);
        let listen = lookup.parse("listen", "an address such as 127.0.0.1:8080")?;
        let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let admin_listen = lookup
            .parse("admin_listen", "an address such as 127.0.0.1:9090")?
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let data_dir = lookup
            .get("data_dir")
            .map_or_else(|| PathBuf::from(".comb").join(&instance), PathBuf::from);
        let database_url = lookup.get("database_url").map_or_else(
            || sqlite_url(&data_dir.join(format!("{service}.db"))),
            |url| url.replace("{service}", &service.replace('-', "_")),
        );
        let mut upstreams = BTreeMap::new();
        for (key, value) in &settings {
            if let Some(name) = key.strip_prefix("upstream_") {
                let urls: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|url| !url.is_empty())
                    .map(str::to_owned)
                    .collect();
                for url in &urls {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(
                            lookup.invalid(key, "each address must start with http:// or https://")
                        );
                    }
                }
                upstreams.insert(name.replace('_', "-"), urls);
            }
        }
        let log_format = match lookup.get("log_format") {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(_) => return Err(lookup.invalid("log_format", "use json or text")),
        };
        let drain_ms: u64 = lookup
            .parse("drain_timeout_ms", "milliseconds")?
            .unwrap_or(10_000);
        let call_ms: u64 = lookup
            .parse("call_timeout_ms", "milliseconds")?
            .unwrap_or(2_000);
        if call_ms == 0 {
            return Err(lookup.invalid(
                "call_timeout_ms",
                "a deadline of 0 ms fails every call; use at least 1",
            ));
        }
        let worker_threads: usize = lookup
            .parse("worker_threads", "a number of threads")?
            .unwrap_or(1);
        if !(1..=256).contains(&worker_threads) {
            return Err(lookup.invalid("worker_threads", "use 1 to 256 threads"));
        }
        Ok(Self {
            service: service.to_owned(),
            instance,
            listen,
            admin_listen,
            data_dir,
            database_url,
            upstreams,
            address_file: lookup
                .get("address_file")
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            log_filter: lookup.get("log").unwrap_or("info").to_owned(),
            log_format,
            drain_timeout: Duration::from_millis(drain_ms),
            call_timeout: Duration::from_millis(call_ms),
            parent_pid: lookup.parse("parent_pid", "a process id")?,
            max_in_flight: lookup
                .parse("max_in_flight", "a number of requests")?
                .unwrap_or(1024),
            timeouts: Timeouts::from_settings(&lookup)?,
            max_body_bytes: lookup
                .parse("max_body_bytes", "a number of bytes")?
                .unwrap_or(16 * 1024 * 1024),
            fault_injection: lookup
                .parse("fault_injection", "true or false")?
                .unwrap_or(false),
            worker_threads,
            settings,
        })
    }

    /// A service-specific setting, e.g. `seed` for `COMB_SEED`.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// A service-specific flag: `true`/`false`, `on`/`off`, `yes`/`no` or `1`/`0`;
    /// `default` when unset.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.setting(key) {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(_) => Err(Settings(&self.settings).invalid(key, "use true or false")),
        }
    }

    /// A service-specific duration in whole seconds, `default` when unset.
    pub fn seconds(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        let value: Option<u64> = Settings(&self.settings).parse(key, "seconds")?;
        Ok(value.map_or(default, Duration::from_secs))
    }

    /// A service-specific whole number within `range` (`what` says what it counts, for
    /// the error), `default` when unset.
    pub fn number<T>(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<T>,
        what: &str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        let expected = format!(
            "a number of {what} from {} to {}",
            range.start(),
            range.end()
        );
        let settings = Settings(&self.settings);
        match settings.parse::<T>(key, &expected)? {
            None => Ok(default),
            Some(value) if range.contains(&value) => Ok(value),
            Some(_) => Err(settings.invalid(key, &format!("use {expected}"))),
        }
    }

    /// A service-specific duration in whole milliseconds (`0` allowed), `default` when unset.
    pub fn millis(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        let value: Option<u64> = Settings(&self.settings).parse(key, "milliseconds")?;
        Ok(value.map_or(default, Duration::from_millis))
    }

    /// Whether this instance calls `service` (its `upstream_SERVICE` setting is present,
    /// even with no address because discovery will give them).
    pub fn calls(&self, service: &str) -> bool {
        self.upstreams.contains_key(service)
    }

    /// The base URLs of the instances of `service`, or an error naming the setting to set.
    /// An empty list is an answer only when the instances come from discovery
    /// (`discovery_url`).
    pub fn upstream(&self, service: &str) -> Result<&[String], ConfigError> {
        let discovered = self.setting("discovery_url").is_some();
        match self.upstreams.get(service) {
            Some(urls) if !urls.is_empty() || discovered => Ok(urls),
            _ => {
                let key = format!("upstream_{}", service.replace('-', "_"));
                Err(ConfigError::Invalid {
                    env: env_name(&key),
                    key,
                    value: String::new(),
                    reason: format!(
                        "{} calls {service} but has no address for it; set it to the base URL of each {service} instance, comma-separated",
                        self.service
                    ),
                })
            }
        }
    }
}

/// The environment variable that overrides a setting.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// A `sqlite://` URL for a database file.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

struct Settings<'a>(&'a BTreeMap<String, String>);

impl Settings<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn parse<T: std::str::FromStr>(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.get(key)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| self.invalid(key, &format!("expected {expected}")))
            })
            .transpose()
    }

    fn invalid(&self, key: &str, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            env: env_name(key),
            value: self.get(key).unwrap_or_default().to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn defaults_put_sqlite_in_the_instance_data_dir() {
        let config = ServiceConfig::resolve("catalog", BTreeMap::new(), no_env()).expect("config");
        assert_eq!(config.instance, "catalog-1");
        assert_eq!(config.data_dir, PathBuf::from(".comb/catalog-1"));
        assert_eq!(config.database_url, "sqlite://.comb/catalog-1/catalog.db");
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.call_timeout, Duration::from_secs(2));
        assert_eq!(config.worker_threads, 1, "one thread per instance");
    }

    #[test]
    fn worker_threads_are_a_small_positive_number() {
        let config =
            ServiceConfig::resolve("gateway", BTreeMap::new(), [("COMB_WORKER_THREADS", "4")])
                .expect("config");
        assert_eq!(config.worker_threads, 4);
        for bad in ["0", "many", "100000"] {
            let error =
                ServiceConfig::resolve("gateway", BTreeMap::new(), [("COMB_WORKER_THREADS", bad)])
                    .expect_err("refused");
            assert!(error.to_string().contains("COMB_WORKER_THREADS"), "{error}");
        }
    }

    #[test]
    fn millisecond_settings_default_parse_and_name_the_variable_when_wrong() {
        let default = Duration::from_millis(25);
        let unset = ServiceConfig::resolve(
            "reports",
            BTreeMap::new(),
            std::iter::empty::<(&str, &str)>(),
        )
        .expect("config");
        assert_eq!(
            unset.millis("events_batch_wait_ms", default).ok(),
            Some(default)
        );
        let set = ServiceConfig::resolve(
            "reports",
            BTreeMap::new(),
            [("COMB_EVENTS_BATCH_WAIT_MS", "0")],
        )
        .expect("config");
        assert_eq!(
            set.millis("events_batch_wait_ms", default).ok(),
            Some(Duration::ZERO)
        );
        let wrong = ServiceConfig::resolve(
            "reports",
            BTreeMap::new(),
            [("COMB_EVENTS_BATCH_WAIT_MS", "soon")],
        )
        .expect("config");
        let error = wrong
            .millis("events_batch_wait_ms", default)
            .expect_err("refused");
        assert!(
            error.to_string().contains("COMB_EVENTS_BATCH_WAIT_MS"),
            "{error}"
        );
    }

    #[test]
    fn typed_service_settings_name_the_setting_when_refused() {
        let config = ServiceConfig::resolve(
            "users",
            BTreeMap::new(),
            [
                ("COMB_PASSWORD_HASHES", "65"),
                ("COMB_TOKEN_TTL_SECS", "60"),
                ("COMB_RATE_LIMITS", "off"),
                ("COMB_GUEST_TOKEN_TTL_SECS", "a week"),
            ],
        )
        .expect("config");
        let refused = config
            .number("password_hashes", 1..=64usize, "hashes", 4)
            .expect_err("out of range");
        let text = refused.to_string();
        assert!(
            text.contains("COMB_PASSWORD_HASHES") && text.contains("from 1 to 64"),
            "{text}"
        );
        assert_eq!(
            config
                .number("sessions", 1..=10u32, "sessions", 3)
                .expect("unset"),
            3
        );
        assert_eq!(
            config
                .seconds("token_ttl_secs", Duration::ZERO)
                .expect("set"),
            Duration::from_secs(60)
        );
        let refused = config
            .seconds("guest_token_ttl_secs", Duration::ZERO)
            .expect_err("not a number");
        assert!(
            refused.to_string().contains("COMB_GUEST_TOKEN_TTL_SECS"),
            "{refused}"
        );
        assert!(!config.flag("rate_limits", true).expect("on or off"));
    }

    #[test]
    fn database_url_template_names_the_service() {
        let env = [("COMB_DATABASE_URL", "postgres://comb@db/comb_{service}")];
        let config = ServiceConfig::resolve("catalog", BTreeMap::new(), env).expect("config");
        assert_eq!(config.database_url, "postgres://comb@db/comb_catalog");
    }

    #[test]
    fn an_upstream_without_addresses_is_followed_through_discovery_alone() {
        let empty = [("COMB_UPSTREAM_CATALOG", "")];
        let alone = ServiceConfig::resolve("gateway", BTreeMap::new(), empty).expect("config");
        assert!(alone.calls("catalog"));
        assert!(!alone.calls("orders"));
        let error = alone
            .upstream("catalog")
            .expect_err("no address, no discovery");
        assert!(
            error.to_string().contains("COMB_UPSTREAM_CATALOG"),
            "{error}"
        );

        let discovered = ServiceConfig::resolve(
            "gateway",
            BTreeMap::new(),
            [
                ("COMB_UPSTREAM_CATALOG", ""),
                ("COMB_DISCOVERY_URL", "http://127.0.0.1:9/discovery"),
            ],
        )
        .expect("config");
        assert_eq!(
            discovered.upstream("catalog").expect("discovered"),
            [] as [String; 0]
        );
        assert!(discovered.upstream("orders").is_err(), "not called at all");
    }

    #[test]
    fn upstreams_come_from_comma_separated_urls() {
        let env = [(
            "COMB_UPSTREAM_CATALOG",
            "http://127.0.0.1:1, http://127.0.0.1:2",
        )];
        let config = ServiceConfig::resolve("gateway", BTreeMap::new(), env).expect("config");
        assert_eq!(
            config.upstream("catalog").expect("catalog"),
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        let missing = config.upstream("orders").expect_err("no orders");
        assert!(
            missing.to_string().contains("COMB_UPSTREAM_ORDERS"),
            "{missing}"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error =
            ServiceConfig::resolve("catalog", BTreeMap::new(), [("COMB_LISTEN", "nowhere")])
                .expect_err("bad listen");
        let text = error.to_string();
        assert!(
            text.contains("COMB_LISTEN") && text.contains("nowhere"),
            "{text}"
        );
        let error =
            ServiceConfig::resolve("catalog", BTreeMap::new(), [("COMB_UPSTREAM_X", "ftp://a")])
                .expect_err("bad url");
        assert!(error.to_string().contains("http://"), "{error}");
    }
}
