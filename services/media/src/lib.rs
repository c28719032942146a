//! The media service: product media. It keeps each master an admin uploads (image, audio
//! or video), queues the job that makes its renditions (done by `media-worker` instances,
//! which lease jobs from here), records the renditions, and serves their bytes to the
//! gateway. Files live in a content-addressed blob store; assets, renditions and jobs in
//! media's own database. It draws a cover for every product that has none uploaded, from
//! the catalog's feed; entitles buyers to downloads from the orders feed and signs their
//! links; and announces MediaUploaded, MediaReady and MediaFailed through its outbox.

pub mod api;
pub mod blobs;
pub mod covers;
pub mod downloads;
pub mod jobs;
pub mod sniff;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use comb_contracts::events::{self as contract, ProductChanged};
use comb_contracts::media::v1 as proto;
use comb_contracts::media::v1::media_server::MediaServer;
use comb_kit::ServiceConfig;
use comb_kit::clock::now_ms;
use comb_kit::events::{self as kit_events, Event, Handler, HandlerError, Transport};
use comb_kit::server;
use comb_kit::service::Service;
use comb_kit::storage::sql;
use comb_kit::storage::{Database, Migration, Migrations};

use crate::api::{Limits, MediaApi};
use crate::blobs::Blobs;
use crate::downloads::{Entitlements, Signer};
use crate::jobs::{MediaKind, MediaStore, NewAsset};

pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 1,
            description: "media",
            sql: include_str!("../migrations/sqlite/0001_media.sql"),
        },
        Migration {
            version: 2,
            description: "downloads",
            sql: include_str!("../migrations/sqlite/0002_downloads.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            description: "media",
            sql: include_str!("../migrations/postgres/0001_media.sql"),
        },
        Migration {
            version: 2,
            description: "downloads",
            sql: include_str!("../migrations/postgres/0002_downloads.sql"),
        },
    ],
};

/// The path of an upload: its body is a stream the handler reads itself.
const UPLOAD_PATH: &str = "/comb.media.v1.Media/Upload";

/// Media's blob store as the settings name it (media and its workers open the same):
/// `media_store`, a directory (by default `DATA_DIR/blobs`) or `s3://bucket[/prefix]`,
/// with `media_s3_endpoint`, `media_s3_region`, `media_s3_access_key_id` and
/// `media_s3_secret_access_key` (else the standard AWS variables) for a bucket.
pub fn blob_store(config: &ServiceConfig) -> Result<Blobs, blobs::BlobError> {
    let location = config.setting("media_store").map_or_else(
        || config.data_dir.join("blobs").display().to_string(),
        str::to_owned,
    );
    let setting = |key: &str| config.setting(key).map(str::to_owned);
    Blobs::open(
        &location,
        &blobs::S3Options {
            endpoint: setting("media_s3_endpoint"),
            region: setting("media_s3_region"),
            access_key_id: setting("media_s3_access_key_id"),
            secret_access_key: setting("media_s3_secret_access_key"),
        },
    )
}

/// A media instance, for `comb_kit::service::run`: its database and blob store, the
/// reader of the catalog feed (drawing covers), and the queue depth gauge.
pub async fn build(config: ServiceConfig) -> anyhow::Result<Service> {
    let limits = Limits {
        max_upload_bytes: config.number(
            "media_max_upload_bytes",
            1..=u64::MAX,
            "a number of bytes",
            2 * 1024 * 1024 * 1024,
        )?,
        upload_idle: config.seconds("media_upload_idle_seconds", Duration::from_secs(60))?,
        retry_backoff: config.millis("media_retry_backoff_ms", Duration::from_secs(2))?,
        download_link_lifetime: config.seconds(
            "media_download_link_seconds",
            Duration::from_secs(48 * 3600),
        )?,
    };
    let db = Database::open(&config.database_url, &MIGRATIONS).await?;
    let blobs = blob_store(&config)?;
    let store = MediaStore::new(db.clone());
    let transport = Transport::from_config(&config).await?;
    let catalog = transport
        .consumer(
            &config,
            &db,
            "catalog",
            Arc::new(DrawnCovers {
                store: store.clone(),
                blobs: blobs.clone(),
            }),
        )
        .await?;
    server::stream_bodies_of(|path| path == UPLOAD_PATH);
    let api = MediaApi {
        store: store.clone(),
        blobs,
        limits: Arc::new(limits),
        signer: Signer::load(&db).await?,
    };
    let mut service = Service::new(routes(api, &db))
        .producing(&transport, &db, "media")
        .task("catalog consumer", catalog.run())
        .task("queue gauge", gauge_queue(store));
    // Downloads come from confirmed orders; without orders, none are sold.
    if config.calls("orders") || matches!(transport, Transport::Nats(_)) {
        let orders = transport
            .consumer(&config, &db, "orders", Arc::new(Entitlements))
            .await?;
        service = service.task("orders consumer", orders.run());
    }
    Ok(service)
}

/// The media API, the feed of media events, and the watch of its data version.
pub fn routes(api: MediaApi, db: &Database) -> Router {
    let routes = server::add_grpc(Router::new(), MediaServer::new(api));
    comb_kit::versions::version_routes(kit_events::feed_routes(routes, db, "media"), db)
}

/// Keeps the queue depth and stored bytes gauges current.
async fn gauge_queue(store: MediaStore) {
    loop {
        match store.stats().await {
            Ok(stats) => {
                metrics::gauge!("comb_media_queue_depth").set(stats.queued as f64);
                metrics::gauge!("comb_media_jobs_running").set(stats.running as f64);
                metrics::gauge!("comb_media_bytes_stored").set(stats.bytes_stored as f64);
            }
            Err(error) => tracing::debug!(%error, "queue depth unknown for now"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Draws a cover for each new or renamed product that has no uploaded one.
struct DrawnCovers {
    store: MediaStore,
    blobs: Blobs,
}

#[tonic::async_trait]
impl Handler for DrawnCovers {
    fn wants(&self, kind: &str) -> bool {
        kind == contract::PRODUCT_CREATED || kind == contract::PRODUCT_UPDATED
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let product: ProductChanged = event.data()?;
        let product_id = product.product_id.as_str();
        let drawn_from = format!(
            "{}\n{}\n{}",
            product.kind,
            product.title,
            product.creators.join("\n")
        );
        let drawn: Option<String> =
            sql::query_scalar("SELECT drawn_from FROM drawn_covers WHERE product_id = $1")
                .bind(product_id)
                .fetch_optional(&mut **tx)
                .await?;
        if drawn.as_deref() == Some(drawn_from.as_str()) {
            return Ok(());
        }
        let retry = |error: &dyn std::fmt::Display| HandlerError::Retry(error.to_string());
        if self
            .store
            .has_uploaded_image(tx, product_id)
            .await
            .map_err(|error| retry(&error))?
        {
            return Ok(());
        }
        let svg = covers::draw(&product.kind, &product.title, &product.creators);
        let stored = self
            .blobs
            .put(svg.as_bytes())
            .await
            .map_err(|error| retry(&error))?;
        let (width, height) = if product.kind == "music" {
            (600, 600)
        } else {
            (400, 600)
        };
        let asset = NewAsset {
            product_id: product_id.to_owned(),
            kind: MediaKind::Image,
            origin: "drawn",
            file_name: "cover.svg".to_owned(),
            master_sha256: stored.sha256.clone(),
            master_type: "image/svg+xml".to_owned(),
            master_bytes: stored.bytes,
        };
        let cover = proto::Rendition {
            asset_id: String::new(),
            name: "cover.svg".to_owned(),
            content_type: "image/svg+xml".to_owned(),
            bytes: stored.bytes,
            sha256: stored.sha256,
            width,
            height,
            duration_ms: 0,
            summary: "drawn SVG cover".to_owned(),
            public: true,
        };
        let asset_id = self
            .store
            .add_ready(tx, &asset, &cover, now_ms())
            .await
            .map_err(|error| retry(&error))?;
        sql::query(
            "INSERT INTO drawn_covers (product_id, drawn_from, asset_id) VALUES ($1, $2, $3)
             ON CONFLICT (product_id) DO UPDATE SET drawn_from = excluded.drawn_from, asset_id = excluded.asset_id",
        )
        .bind(product_id)
        .bind(drawn_from.as_str())
        .bind(asset_id.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
