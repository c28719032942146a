//! Media's gRPC API: uploads, jobs (for operators and for workers), and reading files.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use comb_contracts::media::is_rendition_name;
use comb_contracts::media::v1 as proto;
use comb_contracts::media::v1::media_server::Media;
use comb_kit::clock::now_ms;
use comb_kit::grpc::{invalid_argument, is_key, key_error};
use comb_kit::problem::FieldError;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::blobs::{BlobError, Blobs};
use crate::downloads::{self, Links, Refused, Signer};
use crate::jobs::{JobError, JobState, MediaStore, NewAsset};
use crate::sniff;

/// How media's API behaves.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest master accepted.
    pub max_upload_bytes: u64,
    /// The longest an upload may pause between two parts.
    pub upload_idle: Duration,
    /// The first wait before a failed job runs again; doubled per attempt.
    pub retry_backoff: Duration,
    /// How long a signed download link lasts.
    pub download_link_lifetime: Duration,
}

#[derive(Debug, Clone)]
pub struct MediaApi {
    pub(crate) store: MediaStore,
    pub(crate) blobs: Blobs,
    pub(crate) limits: Arc<Limits>,
    pub(crate) signer: Signer,
}

/// Bytes read before a master's type is decided.
const SNIFF_BYTES: usize = 8 * 1024;
/// The largest chunk of a file sent in one message.
const READ_CHUNK_BYTES: usize = 256 * 1024;

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "media storage failed");
    Status::internal("media storage failed")
}

fn job_status(error: JobError) -> Status {
    match error {
        JobError::NoSuchJob(_) => Status::not_found(error.to_string()),
        JobError::LeaseLost(_) => Status::failed_precondition(error.to_string()),
        JobError::WrongState { .. } => Status::failed_precondition(error.to_string()),
        other => internal(other),
    }
}

fn blob_status(error: BlobError) -> Status {
    match error {
        BlobError::NotADigest(_) => Status::not_found("no such file"),
        other => internal(other),
    }
}

/// The name an uploader gave a file, kept for display: its last path segment, without
/// control characters, at most 200 characters; never used as a path.
pub fn display_name(given: &str) -> String {
    let last = given.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(200).collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        "upload".to_owned()
    } else {
        cleaned
    }
}

/// The next part of an upload, unless the uploader paused for longer than `idle`.
async fn next_part(
    parts: &mut Streaming<proto::UploadPart>,
    idle: Duration,
) -> Result<Option<proto::UploadPart>, Status> {
    tokio::time::timeout(idle, parts.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the upload paused for more than {} s; send the file again",
                idle.as_secs()
            ))
        })?
}

fn job_id(request: Request<proto::JobRef>) -> Result<String, Status> {
    let id = request.into_inner().id;
    if !is_key(&id) {
        return Err(invalid_argument(&[key_error("id")]));
    }
    Ok(id)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<proto::Chunk, Status>> + Send>>;

#[tonic::async_trait]
impl Media for MediaApi {
    async fn upload(
        &self,
        request: Request<Streaming<proto::UploadPart>>,
    ) -> Result<Response<proto::UploadReceipt>, Status> {
        let mut parts = request.into_inner();
        let idle = self.limits.upload_idle;
        let first = next_part(&mut parts, idle)
            .await?
            .ok_or_else(|| Status::invalid_argument("the upload is empty"))?;
        if !is_key(&first.product_id) {
            return Err(invalid_argument(&[key_error("product_id")]));
        }
        let mut head = first.data;
        let mut ended = false;
        while head.len() < SNIFF_BYTES && !ended {
            match next_part(&mut parts, idle).await? {
                Some(part) => head.extend_from_slice(&part.data),
                None => ended = true,
            }
        }
        let Some(sniffed) = sniff::sniff(&head) else {
            return Err(Status::failed_precondition(
                "the file is not an image (JPEG, PNG, WebP, GIF), audio (WAV, FLAC, MP3, Ogg) or video (MP4, WebM, Matroska, QuickTime) master",
            ));
        };
        let limit = self.limits.max_upload_bytes;
        let too_large = || {
            Status::out_of_range(format!(
                "the file is larger than the limit of {limit} bytes"
            ))
        };
        if head.len() as u64 > limit {
            return Err(too_large());
        }
        let mut writer = self.blobs.writer().await.map_err(blob_status)?;
        let written = async {
            writer.write(&head).await.map_err(blob_status)?;
            drop(head);
            while !ended {
                match next_part(&mut parts, idle).await? {
                    Some(part) => {
                        if writer.len() + part.data.len() as u64 > limit {
                            return Err(too_large());
                        }
                        writer.write(&part.data).await.map_err(blob_status)?;
                    }
                    None => ended = true,
                }
            }
            Ok(())
        }
        .await;
        if let Err(status) = written {
            writer.abort().await;
            return Err(status);
        }
        let stored = writer.commit().await.map_err(blob_status)?;
        let asset = NewAsset {
            product_id: first.product_id,
            kind: sniffed.kind,
            origin: "upload",
            file_name: display_name(&first.file_name),
            master_sha256: stored.sha256,
            master_type: sniffed.content_type.to_owned(),
            master_bytes: stored.bytes,
        };
        let job = self
            .store
            .add_upload(&asset, now_ms())
            .await
            .map_err(job_status)?;
        metrics::counter!("comb_media_uploads_total", "kind" => asset.kind.as_str()).increment(1);
        metrics::counter!("comb_media_bytes_stored_total").increment(stored.bytes);
        tracing::info!(asset = %job.asset_id, product = %asset.product_id, kind = asset.kind.as_str(), bytes = stored.bytes, "master stored; job queued");
        Ok(Response::new(proto::UploadReceipt {
            asset_id: job.asset_id.clone(),
            kind: asset.kind.to_proto().into(),
            content_type: asset.master_type,
            bytes: stored.bytes,
            job: Some(job),
        }))
    }

    async fn get_job(
        &self,
        request: Request<proto::JobRef>,
    ) -> Result<Response<proto::Job>, Status> {
        let id = job_id(request)?;
        Ok(Response::new(
            self.store.job(&id).await.map_err(job_status)?,
        ))
    }

    async fn list_jobs(
        &self,
        request: Request<proto::ListJobsRequest>,
    ) -> Result<Response<proto::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let state = JobState::from_proto(request.state());
        let limit = if request.limit == 0 {
            100
        } else {
            request.limit
        };
        let items = self.store.jobs(state, limit).await.map_err(job_status)?;
        Ok(Response::new(proto::ListJobsResponse { items }))
    }

    async fn retry_job(
        &self,
        request: Request<proto::JobRef>,
    ) -> Result<Response<proto::Job>, Status> {
        let id = job_id(request)?;
        Ok(Response::new(
            self.store.retry(&id, now_ms()).await.map_err(job_status)?,
        ))
    }

    async fn cancel_job(
        &self,
        request: Request<proto::JobRef>,
    ) -> Result<Response<proto::Job>, Status> {
        let id = job_id(request)?;
        Ok(Response::new(
            self.store.cancel(&id, now_ms()).await.map_err(job_status)?,
        ))
    }

    async fn stat_rendition(
        &self,
        request: Request<proto::RenditionRef>,
    ) -> Result<Response<proto::Rendition>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.find(&request.asset_id, &request.name, request.grant.as_ref())
                .await?,
        ))
    }

    type ReadRenditionStream = ChunkStream;

    async fn read_rendition(
        &self,
        request: Request<proto::ReadRenditionRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let request = request.into_inner();
        let rendition = self
            .find(&request.asset_id, &request.name, request.grant.as_ref())
            .await?;
        let start = request.offset;
        let end = match request.length {
            0 => rendition.bytes,
            length => start.saturating_add(length).min(rendition.bytes),
        };
        if start > end || start >= rendition.bytes && rendition.bytes > 0 {
            return Err(Status::out_of_range(format!(
                "the file has {} bytes; offset {start} is past its end",
                rendition.bytes
            )));
        }
        let chunks = self
            .blobs
            .read(&rendition.sha256, start..end)
            .await
            .map_err(blob_status)?;
        let stream = chunks.flat_map(|chunk| {
            let messages: Vec<Result<proto::Chunk, Status>> = match chunk {
                Ok(bytes) => bytes
                    .chunks(READ_CHUNK_BYTES)
                    .map(|piece| {
                        Ok(proto::Chunk {
                            data: piece.to_vec(),
                        })
                    })
                    .collect(),
                Err(error) => vec![Err(internal(error))],
            };
            futures_util::stream::iter(messages)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn sign_downloads(
        &self,
        request: Request<proto::SignDownloadsRequest>,
    ) -> Result<Response<proto::SignDownloadsResponse>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        if !is_key(&request.order_id) {
            errors.push(key_error("order_id"));
        }
        if !is_key(&request.owner) {
            errors.push(key_error("owner"));
        }
        if request.product_ids.len() > 100 || !request.product_ids.iter().all(|id| is_key(id)) {
            errors.push(key_error("product_ids"));
        }
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        let lifetime =
            i64::try_from(self.limits.download_link_lifetime.as_millis()).unwrap_or(i64::MAX);
        let links = downloads::sign(
            self.store.database(),
            &self.signer,
            &request.order_id,
            &request.owner,
            &request.product_ids,
            now_ms().saturating_add(lifetime),
        )
        .await
        .map_err(internal)?;
        match links {
            Links::Signed(items) => Ok(Response::new(proto::SignDownloadsResponse { items })),
            Links::NoneYet => Err(Status::failed_precondition(
                "this order has no downloads yet: they come once an order with downloads is confirmed",
            )),
            Links::NotTheirs => Err(Status::not_found("there is no such order")),
        }
    }

    async fn queue_stats(
        &self,
        _request: Request<proto::QueueStatsRequest>,
    ) -> Result<Response<proto::QueueStatsResponse>, Status> {
        Ok(Response::new(self.store.stats().await.map_err(job_status)?))
    }

    async fn lease_job(
        &self,
        request: Request<proto::LeaseJobRequest>,
    ) -> Result<Response<proto::LeaseJobResponse>, Status> {
        let request = request.into_inner();
        if request.worker.is_empty() || request.worker.len() > 200 {
            return Err(invalid_argument(&[FieldError::new(
                "worker",
                "must name the worker in 1 to 200 characters",
            )]));
        }
        let lease_ms = lease_ms(request.lease_ms)?;
        let job = self
            .store
            .lease(&request.worker, lease_ms, now_ms())
            .await
            .map_err(job_status)?;
        Ok(Response::new(proto::LeaseJobResponse { job }))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let lease_ms = lease_ms(request.lease_ms)?;
        let keep_going = self
            .store
            .heartbeat(
                &request.job_id,
                &request.lease,
                request.percent,
                lease_ms,
                now_ms(),
            )
            .await
            .map_err(job_status)?;
        Ok(Response::new(proto::HeartbeatResponse { keep_going }))
    }

    async fn complete_job(
        &self,
        request: Request<proto::CompleteJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        let request = request.into_inner();
        let mut errors = Vec::new();
        for rendition in &request.renditions {
            if !is_rendition_name(&rendition.name) {
                errors.push(FieldError::new(
                    "renditions.name",
                    format!("{:?} is not a rendition name", rendition.name),
                ));
            }
            if rendition.sha256.len() != 64 {
                errors.push(FieldError::new(
                    "renditions.sha256",
                    "must be a hex SHA-256",
                ));
            }
        }
        if request.renditions.is_empty() {
            errors.push(FieldError::new(
                "renditions",
                "a job makes at least one rendition",
            ));
        }
        if !errors.is_empty() {
            return Err(invalid_argument(&errors));
        }
        for rendition in &request.renditions {
            if self
                .blobs
                .size(&rendition.sha256)
                .await
                .map_err(blob_status)?
                != Some(rendition.bytes)
            {
                return Err(Status::failed_precondition(format!(
                    "rendition {} is not in the store with {} bytes; store it before completing the job",
                    rendition.name, rendition.bytes
                )));
            }
        }
        let job = self
            .store
            .complete(
                &request.job_id,
                &request.lease,
                &request.renditions,
                now_ms(),
            )
            .await
            .map_err(job_status)?;
        let kind = job
            .kind()
            .as_str_name()
            .trim_start_matches("MEDIA_KIND_")
            .to_lowercase();
        metrics::histogram!("comb_media_job_duration_seconds", "kind" => kind)
            .record(job.duration_ms as f64 / 1000.0);
        let bytes: u64 = request
            .renditions
            .iter()
            .map(|rendition| rendition.bytes)
            .sum();
        metrics::counter!("comb_media_bytes_stored_total").increment(bytes);
        Ok(Response::new(job))
    }

    async fn fail_job(
        &self,
        request: Request<proto::FailJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        let request = request.into_inner();
        let backoff = i64::try_from(self.limits.retry_backoff.as_millis()).unwrap_or(i64::MAX);
        let job = self
            .store
            .fail(
                &request.job_id,
                &request.lease,
                &request.reason,
                request.retryable,
                backoff,
                now_ms(),
            )
            .await
            .map_err(job_status)?;
        Ok(Response::new(job))
    }
}

impl MediaApi {
    /// A rendition anyone may fetch, or one sold as a download that `grant` opens: signed
    /// for it, not expired, and from an order that still entitles its buyer.
    async fn find(
        &self,
        asset: &str,
        name: &str,
        grant: Option<&proto::DownloadGrant>,
    ) -> Result<proto::Rendition, Status> {
        if !is_key(asset) || !is_rendition_name(name) {
            return Err(Status::not_found("no such file"));
        }
        let rendition = self
            .store
            .rendition(asset, name)
            .await
            .map_err(job_status)?
            .ok_or_else(|| Status::not_found("no such file"))?;
        if rendition.public {
            return Ok(rendition);
        }
        let refused = |why: Refused| Status::permission_denied(why.to_string());
        let grant = grant.ok_or_else(|| refused(Refused::NoLink))?;
        let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
        self.signer
            .check(asset, name, grant, now)
            .map_err(refused)?;
        let product = self.store.product_of(asset).await.map_err(job_status)?;
        let entitled = downloads::entitled(self.store.database(), &grant.order_id, &product)
            .await
            .map_err(internal)?;
        match entitled {
            Some(true) => {}
            Some(false) => return Err(refused(Refused::Revoked)),
            None => {
                return Err(Status::unavailable(
                    "the order is still being recorded; retry in a moment",
                ));
            }
        }
        Ok(rendition)
    }
}

fn lease_ms(requested: u64) -> Result<i64, Status> {
    if !(1_000..=600_000).contains(&requested) {
        return Err(invalid_argument(&[FieldError::new(
            "lease_ms",
            "must be 1000 to 600000 milliseconds",
        )]));
    }
    Ok(i64::try_from(requested).unwrap_or(600_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uploaders_file_name_is_never_a_path() {
        assert_eq!(display_name("../../etc/passwd"), "passwd");
        assert_eq!(display_name("C:\\music\\take 1.wav"), "take 1.wav");
        assert_eq!(display_name("..\u{0}"), "upload");
        assert_eq!(display_name(""), "upload");
        assert_eq!(display_name(".hidden"), "hidden");
    }

    #[test]
    fn rendition_names_are_a_closed_vocabulary() {
        for name in [
            "w320.webp",
            "preview.m4a",
            "hls-360p-00001.ts",
            "hls.m3u8",
            "cover.svg",
        ] {
            assert!(is_rendition_name(name), "{name}");
        }
        for name in [
            "../x.mp4",
            "a/b.mp4",
            "W320.webp",
            "x.exe",
            "x",
            ".mp4",
            "a.b.mp4",
        ] {
            assert!(!is_rendition_name(name), "{name}");
        }
    }
}
