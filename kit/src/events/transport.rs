//! How events travel: the producers' own feeds (embedded) or NATS JetStream.

use std::sync::Arc;
use std::time::Duration;

use super::consumer::{BATCH_WAIT, Consumer, Handler};
use crate::grpc::Upstream;
use crate::storage::Database;

/// Why the event transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("setting events_transport (COMB_EVENTS_TRANSPORT) is {0:?}: use embedded or nats")]
    Unknown(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Upstream(#[from] crate::grpc::UpstreamError),
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
}

/// A feed read waits this long for events, so its call deadline must be longer.
const LONG_POLL: Duration = Duration::from_secs(15);

/// How a service's events travel, from its settings: `events_transport` is `embedded`
/// (the default: each producer serves its own feed) or `nats` (JetStream at `nats_url`,
/// default `nats://127.0.0.1:4222`, streams named with `nats_prefix`, default `COMB`).
#[derive(Debug, Clone)]
pub enum Transport {
    Embedded,
    Nats(Box<crate::nats::Nats>),
}

impl Transport {
    pub async fn from_config(config: &crate::ServiceConfig) -> Result<Self, TransportError> {
        match config.setting("events_transport").unwrap_or("embedded") {
            "embedded" => Ok(Self::Embedded),
            "nats" => {
                let url = config
                    .setting("nats_url")
                    .unwrap_or("nats://127.0.0.1:4222");
                let prefix = config.setting("nats_prefix").unwrap_or("COMB");
                Ok(Self::Nats(Box::new(
                    crate::nats::Nats::connect(url, prefix).await?,
                )))
            }
            other => Err(TransportError::Unknown(other.to_owned())),
        }
    }

    /// What a producer runs besides its feed route: with NATS, the relay of its outbox to
    /// JetStream (the embedded transport needs nothing).
    pub fn relay(
        &self,
        db: &Database,
        producer: &str,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        match self {
            Self::Nats(nats) => Some(nats.as_ref().clone().relay(db.clone(), producer.to_owned())),
            Self::Embedded => None,
        }
    }

    /// A consumer, for this service, of `producer`'s events.
    pub async fn consumer(
        &self,
        config: &crate::ServiceConfig,
        db: &Database,
        producer: &str,
        handler: Arc<dyn Handler>,
    ) -> Result<Consumer, TransportError> {
        let mut consumer = match self {
            Self::Embedded => {
                let feed = Upstream::from_config_with_timeout(
                    config,
                    producer,
                    config.call_timeout.max(LONG_POLL),
                )?;
                Consumer::new(db.clone(), Arc::new(feed), handler)
            }
            Self::Nats(nats) => {
                Consumer::nats(db.clone(), nats, producer, &config.service, handler).await?
            }
        };
        consumer.batch_wait = config.millis("events_batch_wait_ms", BATCH_WAIT)?;
        Ok(consumer)
    }
}
