//! Each product's media (cover, preview, whether it is sold as a download), kept from the
//! media service's MediaReady events: the newest ready image is the cover, the newest
//! ready audio or video the preview.

use comb_contracts::events::{self as contract, MediaReady};
use comb_kit::events::{Event, Handler, HandlerError};
use comb_kit::storage::{Database, sql};

use crate::domain::{MediaAsset, MediaFile, ProductMedia};

/// Records each ready asset on its product.
#[derive(Debug)]
pub struct MediaShown;

#[tonic::async_trait]
impl Handler for MediaShown {
    fn wants(&self, kind: &str) -> bool {
        kind == contract::MEDIA_READY
    }

    async fn handle(
        &self,
        db: &Database,
        tx: &mut sql::Transaction,
        event: &Event,
    ) -> Result<(), HandlerError> {
        let ready: MediaReady = event.data()?;
        let current: Option<String> = sql::query_scalar(format!(
            "SELECT media FROM products WHERE id = $1{}",
            db.lock_rows()
        ))
        .bind(ready.product_id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        let Some(current) = current else {
            tracing::warn!(product = %ready.product_id, asset = %ready.asset_id, "media for a product the catalog does not have; ignored");
            return Ok(());
        };
        let mut media: ProductMedia = serde_json::from_str(&current)
            .map_err(|error| HandlerError::Retry(format!("products.media is corrupt: {error}")))?;
        apply(&mut media, &ready);
        let text = serde_json::to_string(&media)
            .map_err(|error| HandlerError::Poison(error.to_string()))?;
        sql::query("UPDATE products SET media = $2 WHERE id = $1")
            .bind(ready.product_id.as_str())
            .bind(text.as_str())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// `media` with the ready asset in its place.
pub fn apply(media: &mut ProductMedia, ready: &MediaReady) {
    let asset = MediaAsset {
        asset_id: ready.asset_id.clone(),
        kind: ready.kind.clone(),
        files: ready
            .renditions
            .iter()
            .filter(|rendition| rendition.public)
            .map(|rendition| MediaFile {
                name: rendition.name.clone(),
                content_type: rendition.content_type.clone(),
                width: rendition.width,
                height: rendition.height,
                duration_ms: rendition.duration_ms,
            })
            .collect(),
    };
    match ready.kind.as_str() {
        "image" => media.cover = Some(asset),
        "audio" | "video" => {
            media.downloadable = ready.renditions.iter().any(|rendition| !rendition.public);
            media.preview = Some(asset);
        }
        other => tracing::warn!(kind = other, "media of an unknown kind; ignored"),
    }
}

#[cfg(test)]
mod tests {
    use comb_contracts::events::MediaRendition;

    use super::*;

    fn rendition(name: &str, public: bool) -> MediaRendition {
        MediaRendition {
            name: name.into(),
            content_type: "video/mp4".into(),
            bytes: 10,
            width: 640,
            height: 360,
            duration_ms: 30_000,
            public,
        }
    }

    #[test]
    fn covers_and_previews_take_their_places_and_only_public_files_show() {
        let mut media = ProductMedia::default();
        let video = MediaReady {
            asset_id: "a1".into(),
            product_id: "p".into(),
            kind: "video".into(),
            renditions: vec![rendition("preview.mp4", true), rendition("720p.mp4", false)],
        };
        apply(&mut media, &video);
        let preview = media.preview.clone().expect("preview");
        assert_eq!(preview.files.len(), 1);
        assert_eq!(preview.files[0].name, "preview.mp4");
        assert!(media.downloadable);
        let cover = MediaReady {
            asset_id: "a2".into(),
            kind: "image".into(),
            renditions: vec![rendition("cover.svg", true)],
            ..video
        };
        apply(&mut media, &cover);
        assert_eq!(media.cover.expect("cover").asset_id, "a2");
        assert_eq!(media.preview.expect("kept").asset_id, "a1");
    }
}
