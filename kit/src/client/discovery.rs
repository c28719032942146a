//! Where an upstream's instances come from: its settings, and under `comb up` the
//! launcher's discovery, followed as instances come and go; a call made before any instance
//! is known waits for one, up to its deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::balance::Instance;
use super::{CallPolicy, Shared, Upstream, UpstreamError};

impl Upstream {
    /// The upstream `service` as this instance's settings describe it: its addresses
    /// (`upstream_SERVICE`), the call timeout, and, when `discovery_url` is set (as `comb up`
    /// does), instances kept up to date from there as the service scales.
    pub fn from_config(
        config: &crate::ServiceConfig,
        service: &str,
    ) -> Result<Self, UpstreamError> {
        Self::from_config_with_timeout(config, service, config.call_timeout)
    }

    /// The same, with a call timeout of its own (a long poll, a call that waits).
    pub fn from_config_with_timeout(
        config: &crate::ServiceConfig,
        service: &str,
        call_timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let urls = config.upstream(service)?;
        let policy = CallPolicy::new(call_timeout);
        let Some(discovery) = config.setting("discovery_url") else {
            return Self::with_policy(service, urls, policy);
        };
        // With discovery, the instances may all be learnt from it: until then a call
        // finds no instance and fails at once.
        let upstream = Self::with_instances(service, urls, policy)?;
        upstream.follow(discovery.trim_end_matches('/'));
        Ok(upstream)
    }

    /// Keeps the instances up to date from the launcher's discovery at `url`: the ready
    /// instances of this service, as they change. While it does not answer, or lists none,
    /// the known instances stay.
    pub fn follow(&self, url: &str) {
        let shared = Arc::downgrade(&self.shared);
        let mut snapshots = crate::discovery::watch(url);
        tokio::spawn(async move {
            let mut last: Option<Vec<String>> = None;
            // Ends when the upstream is dropped or discovery goes away.
            while snapshots.changed().await.is_ok() {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let upstream = Upstream { shared };
                let found = snapshots
                    .borrow_and_update()
                    .services
                    .get(upstream.service())
                    .cloned()
                    .unwrap_or_default();
                if found.is_empty() || last.as_ref() == Some(&found) || found == upstream.urls() {
                    last = Some(found);
                    continue;
                }
                match upstream.set_urls(&found) {
                    Ok(()) => {
                        tracing::info!(upstream = %upstream.service(), instances = ?found, "instances changed");
                        last = Some(found);
                    }
                    Err(error) => tracing::warn!(%error, "discovery gave an unusable address"),
                }
            }
        });
    }
}

impl Shared {
    /// An instance for a call made before any was known (a caller started before the
    /// service it calls reported where it listens): waits for discovery to name one, at
    /// most until the call's deadline.
    pub(super) async fn first_instance(&self, deadline: Instant) -> Option<Arc<Instance>> {
        loop {
            let changed = self.instances_changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change in between is not missed.
            changed.as_mut().enable();
            if let Some(instance) = self.pick(&HashSet::new()) {
                return Some(instance);
            }
            if !self.snapshot().is_empty() {
                return None;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::BreakerState;
    use super::*;

    #[tokio::test]
    async fn a_call_made_before_discovery_names_an_instance_waits_for_one() {
        use comb_contracts::versions::v1::{WatchRequest, data_versions_client};
        let config = crate::ServiceConfig::resolve(
            "gateway",
            std::collections::BTreeMap::new(),
            [
                ("COMB_UPSTREAM_CATALOG", ""),
                // Nothing answers here: discovery names no instance.
                ("COMB_DISCOVERY_URL", "http://127.0.0.1:9"),
                ("COMB_CALL_TIMEOUT_MS", "100"),
            ],
        )
        .expect("config");
        let upstream = Upstream::from_config(&config, "catalog").expect("upstream");
        assert!(upstream.urls().is_empty());
        let watch = || WatchRequest {
            after: 0,
            wait_ms: 0,
        };
        let mut client = data_versions_client::DataVersionsClient::new(upstream.channel());
        for _ in 0..10 {
            let refused = client
                .watch(watch())
                .await
                .expect_err("no instance to call");
            assert_eq!(refused.code(), tonic::Code::Unavailable);
            assert!(refused.message().contains("no instance"), "{refused:?}");
        }
        assert_eq!(
            upstream.breaker(),
            BreakerState::Closed,
            "no instance yet says nothing of the instances' health"
        );

        // A call waiting for its first instance goes to it as soon as it is named.
        let patient =
            Upstream::from_config_with_timeout(&config, "catalog", Duration::from_secs(30))
                .expect("upstream");
        let mut client = data_versions_client::DataVersionsClient::new(patient.channel());
        let call = tokio::spawn(async move { client.watch(watch()).await });
        let instance = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", instance.local_addr().expect("addr"));
        tokio::task::yield_now().await;
        patient.set_urls(&[url]).expect("discovered");
        let accepted = tokio::time::timeout(Duration::from_secs(10), instance.accept()).await;
        assert!(
            accepted.is_ok(),
            "the waiting call connected to the new instance"
        );
        call.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_a_first_instance_until_its_deadline_and_no_longer() {
        use comb_contracts::versions::v1::{WatchRequest, data_versions_client};
        let config = crate::ServiceConfig::resolve(
            "gateway",
            std::collections::BTreeMap::new(),
            [
                ("COMB_UPSTREAM_CATALOG", ""),
                ("COMB_DISCOVERY_URL", "http://127.0.0.1:9"),
                ("COMB_CALL_TIMEOUT_MS", "30000"),
            ],
        )
        .expect("config");
        let upstream = Upstream::from_config(&config, "catalog").expect("upstream");
        let mut client = data_versions_client::DataVersionsClient::new(upstream.channel());
        let started = Instant::now();
        let refused = client
            .watch(WatchRequest {
                after: 0,
                wait_ms: 0,
            })
            .await
            .expect_err("no instance ever named");
        let waited = started.elapsed();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "waited {waited:?} for a 30 s call"
        );
    }
}
