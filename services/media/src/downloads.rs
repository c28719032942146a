//! Downloads: a confirmed order's digital lines entitle its buyer to the products'
//! full-length files until the order is cancelled. Links to them are signed with the
//! deployment's key (HMAC-SHA256 over the file, the order and the expiry) and expire, so a
//! link cannot be made for another file, another order or a longer time.

use comb_contracts::events::{self as contract, OrderCancelled, OrderConfirmed};
use comb_contracts::media::v1 as proto;
use comb_kit::clock::rfc3339_from_ms;
use comb_kit::events::{Event, Handler, HandlerError};
use comb_kit::storage::{Database, sql};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::blobs::hex;

/// The deployment's key for download links, kept in media's database (made at the first
/// start), so every media instance of a deployment signs and checks alike.
#[derive(Clone)]
pub struct Signer {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Signer(…)")
    }
}

/// Why a download link does not open its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "this file is sold as a download: buy the product, then use the link on the order page"
    )]
    NoLink,
    #[error("the download link is not valid: use the link on the order page as it is")]
    Forged,
    #[error("the download link has expired: get a new one from the order page")]
    Expired,
    #[error("the order no longer entitles its buyer to this file (it was cancelled)")]
    Revoked,
}

impl Signer {
    /// A signer with `key`.
    pub fn new(key: &[u8]) -> Option<Self> {
        Some(Self {
            keyed: Hmac::<Sha256>::new_from_slice(key).ok()?,
        })
    }

    /// The deployment's key, made now when there is none yet.
    pub async fn load(db: &Database) -> anyhow::Result<Self> {
        let mut made = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut made[..]);
        sql::query(
            "INSERT INTO signing_keys (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(hex(&made).as_str())
        .execute(db)
        .await?;
        let secret: String = sql::query_scalar("SELECT secret FROM signing_keys WHERE id = 1")
            .fetch_one(db)
            .await?;
        Self::new(secret.as_bytes())
            .ok_or_else(|| anyhow::anyhow!("media's signing key cannot key HMAC-SHA256"))
    }

    fn mac(&self, asset: &str, name: &str, order: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(format!("{asset}\n{name}\n{order}\n{expires}").as_bytes());
        mac
    }

    /// The signature of a link to `asset`/`name` for `order` until `expires` (Unix seconds).
    pub fn sign(&self, asset: &str, name: &str, order: &str, expires: u64) -> String {
        hex(&self
            .mac(asset, name, order, expires)
            .finalize()
            .into_bytes())
    }

    /// Whether `grant` was signed for `asset`/`name` and is still good at `now` (Unix
    /// seconds). The signature is compared in constant time.
    pub fn check(
        &self,
        asset: &str,
        name: &str,
        grant: &proto::DownloadGrant,
        now: u64,
    ) -> Result<(), Refused> {
        let signature = unhex(&grant.signature).ok_or(Refused::Forged)?;
        self.mac(asset, name, &grant.order_id, grant.expires)
            .verify_slice(&signature)
            .map_err(|_| Refused::Forged)?;
        if grant.expires < now {
            return Err(Refused::Expired);
        }
        Ok(())
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// Whether `order` still entitles its buyer to `product`'s files; None while media has
/// not yet recorded the order (its confirmation is on its way).
pub async fn entitled(
    db: &Database,
    order: &str,
    product: &str,
) -> Result<Option<bool>, sql::DbError> {
    sql::query_scalar("SELECT active FROM entitlements WHERE order_id = $1 AND product_id = $2")
        .bind(order)
        .bind(product)
        .fetch_optional(db)
        .await
}

/// What asking for an order's links found.
#[derive(Debug)]
pub enum Links {
    Signed(Vec<proto::Download>),
    /// The order has no digital line media knows of (yet): none, or not confirmed.
    NoneYet,
    /// The order's digital lines are someone else's.
    NotTheirs,
}

/// Signed links to the full-length files `owner` is entitled to by `order`, good until
/// `expires_ms`.
/// `announced` are the order's digital lines as its confirmation names them: signed for
/// even before media has recorded the order (a link opens only once it has).
pub async fn sign(
    db: &Database,
    signer: &Signer,
    order: &str,
    owner: &str,
    announced: &[String],
    expires_ms: i64,
) -> Result<Links, sql::DbError> {
    let rows = sql::query(
        "SELECT product_id, owner, active FROM entitlements WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(order)
    .fetch_all(db)
    .await?;
    let mut products = Vec::new();
    for row in &rows {
        if row.try_get::<String, _>("owner")? != owner {
            return Ok(Links::NotTheirs);
        }
        if row.try_get::<bool, _>("active")? {
            products.push(row.try_get::<String, _>("product_id")?);
        }
    }
    if rows.is_empty() {
        if announced.is_empty() {
            return Ok(Links::NoneYet);
        }
        products = announced.to_vec();
    }
    let mut items = Vec::new();
    let expires = u64::try_from(expires_ms / 1000).unwrap_or(0);
    for product in products {
        for file in full_length_files(db, &product).await? {
            let signature = signer.sign(&file.asset_id, &file.name, order, expires);
            items.push(proto::Download {
                url: format!(
                    "/media/{}/{}?order={order}&expires={expires}&sig={signature}",
                    file.asset_id, file.name
                ),
                product_id: product.clone(),
                asset_id: file.asset_id,
                name: file.name,
                content_type: file.content_type,
                bytes: file.bytes,
                expires_at: rfc3339_from_ms(expires_ms),
            });
        }
    }
    Ok(Links::Signed(items))
}

struct File {
    asset_id: String,
    name: String,
    content_type: String,
    bytes: u64,
}

/// The files sold of a product: those its newest ready audio or video asset keeps from
/// the public.
async fn full_length_files(db: &Database, product: &str) -> Result<Vec<File>, sql::DbError> {
    let rows = sql::query(
        "SELECT r.asset_id, r.name, r.content_type, r.bytes FROM renditions r
         JOIN assets a ON a.id = r.asset_id
         WHERE a.product_id = $1 AND a.kind IN ('audio', 'video') AND r.public = $2
         ORDER BY a.created_at_ms DESC, a.id DESC, r.name",
    )
    .bind(product)
    .bind(false)
    .fetch_all(db)
    .await?;
    let newest: Option<String> = rows
        .first()
        .map(|row| row.try_get("asset_id"))
        .transpose()?;
    rows.iter()
        .filter(|row| row.try_get::<String, _>("asset_id").ok() == newest)
        .map(|row| {
            Ok(File {
                asset_id: row.try_get("asset_id")?,
                name: row.try_get("name")?,
                content_type: row.try_get("content_type")?,
                bytes: row.try_get("bytes")?,
            })
        })
        .collect()
}

/// Grants entitlements for confirmed orders' digital lines and revokes those of
/// cancelled orders.
#[derive(Debug)]
pub struct Entitlements;

#[tonic::async_trait]
impl Handler for Entitlements {
    fn wants(&self, kind: &str) -> bool {
        kind == contract::ORDER_CONFIRMED || kind == contract::ORDER_CANCELLED
    }

    async fn handle(
        &self,
        _db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let now = comb_kit::clock::now_ms();
        if event.kind == contract::ORDER_CANCELLED {
            let order: OrderCancelled = event.data()?;
            sql::query(
                "UPDATE entitlements SET active = $2, revoked_at_ms = $3 WHERE order_id = $1 AND active = $4",
            )
            .bind(order.order_id.as_str())
            .bind(false)
            .bind(now)
            .bind(true)
            .execute(&mut **tx)
            .await?;
            return Ok(());
        }
        let order: OrderConfirmed = event.data()?;
        for line in order.lines.iter().filter(|line| line.digital) {
            sql::query(
                "INSERT INTO entitlements (order_id, product_id, owner, active, granted_at_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id, product_id) DO NOTHING",
            )
            .bind(order.order_id.as_str())
            .bind(line.product_id.as_str())
            .bind(order.owner.as_str())
            .bind(true)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn grant(signer: &Signer, expires: u64) -> proto::DownloadGrant {
        proto::DownloadGrant {
            order_id: "o-1".into(),
            expires,
            signature: signer.sign("a-1", "download.mp3", "o-1", expires),
        }
    }

    #[test]
    fn a_link_opens_only_its_file_for_its_order_until_it_expires() {
        let signer = Signer::new(b"a test key").unwrap();
        let good = grant(&signer, 1_000);
        assert_eq!(signer.check("a-1", "download.mp3", &good, 999), Ok(()));
        assert_eq!(
            signer.check("a-1", "download.mp3", &good, 1_001),
            Err(Refused::Expired)
        );
        assert_eq!(
            signer.check("a-2", "download.mp3", &good, 999),
            Err(Refused::Forged)
        );
        assert_eq!(
            signer.check("a-1", "720p.mp4", &good, 999),
            Err(Refused::Forged)
        );
        let other_order = proto::DownloadGrant {
            order_id: "o-2".into(),
            ..good.clone()
        };
        assert_eq!(
            signer.check("a-1", "download.mp3", &other_order, 999),
            Err(Refused::Forged)
        );
        let longer = proto::DownloadGrant {
            expires: 9_999,
            ..good.clone()
        };
        assert_eq!(
            signer.check("a-1", "download.mp3", &longer, 999),
            Err(Refused::Forged)
        );
        let garbled = proto::DownloadGrant {
            signature: "zz".into(),
            ..good
        };
        assert_eq!(
            signer.check("a-1", "download.mp3", &garbled, 999),
            Err(Refused::Forged)
        );
        let another_key = Signer::new(b"another deployment").unwrap();
        assert_eq!(
            another_key.check("a-1", "download.mp3", &grant(&signer, 1_000), 999),
            Err(Refused::Forged)
        );
    }
}
