//! Product media at the edge: admins upload masters and follow their jobs; anyone fetches
//! the public files (covers, previews) at `/media/{asset}/{rendition}`, with byte ranges,
//! validators and immutable caching, since each file is named by its content.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use comb_contracts::media::v1 as proto;
use comb_contracts::media::v1::media_client::MediaClient;
use comb_kit::Problem;
use comb_kit::client::Upstream;
use comb_kit::grpc::is_key;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::GatewayState;
use crate::auth::Admin;
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::{NoSuchProduct, NotAdmin, Unauthorized};
use crate::params::{ApiQuery, ProductId};

/// The largest master an admin may upload, unless `media_max_upload_bytes` says otherwise.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The upload route, whose body the handler streams (never read whole).
pub fn is_upload_path(path: &str) -> bool {
    path.strip_prefix("/api/v1/admin/products/")
        .and_then(|rest| rest.strip_suffix("/media"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// A media job as admins see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MediaJob {
    pub id: String,
    pub asset_id: String,
    pub product_id: String,
    /// image, audio or video.
    pub kind: String,
    /// queued, running, done, failed or cancelled.
    pub state: String,
    pub percent: u32,
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// From the first attempt's start to done, when done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MediaJobs {
    pub items: Vec<MediaJob>,
}

/// An accepted upload: the asset it became and the job making its renditions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadAccepted {
    pub asset_id: String,
    pub kind: String,
    /// The type found in the file's bytes.
    pub content_type: String,
    pub bytes: u64,
    pub job: MediaJob,
}

/// What a signed download link adds to a file's address.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct SignedLink {
    /// The order that entitles the link's holder.
    pub order: Option<String>,
    /// Unix seconds after which the link is refused.
    pub expires: Option<u64>,
    /// The link's signature.
    pub sig: Option<String>,
}

impl SignedLink {
    fn grant(self) -> Option<proto::DownloadGrant> {
        Some(proto::DownloadGrant {
            order_id: self.order?,
            expires: self.expires?,
            signature: self.sig?,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs in this state: queued, running, done, failed or cancelled.
    #[param(pattern = "^(queued|running|done|failed|cancelled)$")]
    pub state: Option<String>,
    /// At most this many, newest first (1 to 500, 100 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase()
}

fn job_view(job: proto::Job) -> MediaJob {
    MediaJob {
        kind: word(job.kind().as_str_name(), "MEDIA_KIND_"),
        state: word(job.state().as_str_name(), "JOB_STATE_"),
        failure: Some(job.failure).filter(|failure| !failure.is_empty()),
        duration_ms: Some(job.duration_ms).filter(|ms| *ms > 0),
        id: job.id,
        asset_id: job.asset_id,
        product_id: job.product_id,
        percent: job.percent,
        attempts: job.attempts,
        created_at: job.created_at,
        updated_at: job.updated_at,
    }
}

fn media(state: &GatewayState) -> Result<&Arc<Upstream>, Problem> {
    state
        .media
        .as_ref()
        .ok_or_else(|| Problem::unavailable("media is not part of this deployment"))
}

/// Why an upload's body stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokeOff {
    TooLarge,
    Unreadable,
}

/// The file name an upload gives in `Content-Disposition` (kept for display only).
fn file_name(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .split(';')
                .find_map(|part| part.trim().strip_prefix("filename="))
        })
        .map(|name| name.trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// Uploads a master (image, audio or video) for a product.
///
/// The body is the file itself, streamed; its type is found from its bytes, whatever the
/// Content-Type or file name say. A `Content-Disposition: attachment; filename="…"` names
/// it for display.
#[utoipa::path(
    post,
    path = "/api/v1/admin/products/{id}/media",
    tag = "media",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The product's id")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The master file"),
    responses(
        (status = 202, description = "Stored; its job is queued", body = UploadAccepted),
        Unauthorized,
        NotAdmin,
        NoSuchProduct,
        (status = 413, description = "The file is larger than the upload limit", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The file is not an image, audio or video master comb takes", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn upload(
    State(state): State<GatewayState>,
    _admin: Admin,
    ProductId(product_id): ProductId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let media = Arc::clone(media(&state)?);
    let limit = state.max_upload_bytes;
    let too_large = || {
        Problem::payload_too_large(format!(
            "the file is larger than the upload limit of {limit} bytes"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|bytes| bytes > limit) {
        return Err(too_large());
    }
    crate::backend::catalog::product(&state, &product_id).await?;
    let (broken, mut broke) = tokio::sync::watch::channel(None::<BrokeOff>);
    let first = proto::UploadPart {
        product_id,
        file_name: file_name(&headers),
        data: Vec::new(),
    };
    let parts = body.into_data_stream().scan(0u64, move |total, chunk| {
        let part = match chunk {
            Ok(bytes) => {
                *total += bytes.len() as u64;
                if *total > limit {
                    broken.send_replace(Some(BrokeOff::TooLarge));
                    None
                } else {
                    Some(proto::UploadPart {
                        data: bytes.to_vec(),
                        ..proto::UploadPart::default()
                    })
                }
            }
            Err(_) => {
                broken.send_replace(Some(BrokeOff::Unreadable));
                None
            }
        };
        futures_util::future::ready(part)
    });
    let parts = futures_util::stream::iter([first]).chain(parts);
    let mut client = MediaClient::new(media.channel());
    // A body that breaks off (too large, or the client went away) drops the call, so media
    // discards what it received instead of keeping part of a file.
    // The sender goes away with the body stream when it ends whole: then only the answer
    // is awaited.
    let broke_off = async move {
        let why = broke.wait_for(|why| why.is_some()).await.map(|why| *why);
        match why {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        }
    };
    let receipt = tokio::select! {
        answer = client.upload(parts) => answer,
        why = broke_off => {
            return Err(if why == Some(BrokeOff::TooLarge) {
                too_large()
            } else {
                Problem::bad_request("the request body could not be read to its end")
            });
        }
    };
    let receipt = receipt.map_err(|status| match status.code() {
        tonic::Code::FailedPrecondition => {
            Problem::unsupported_media_type(status.message().to_owned())
        }
        tonic::Code::OutOfRange => too_large(),
        _ => media.problem(&status),
    })?;
    let receipt = receipt.into_inner();
    let kind = word(receipt.kind().as_str_name(), "MEDIA_KIND_");
    let job = receipt
        .job
        .map(job_view)
        .ok_or_else(|| Problem::bad_gateway("media accepted the file but named no job"))?;
    let location = format!("/api/v1/admin/media/jobs/{}", job.id);
    let accepted = UploadAccepted {
        kind,
        asset_id: receipt.asset_id,
        content_type: receipt.content_type,
        bytes: receipt.bytes,
        job,
    };
    let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Media jobs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/admin/media/jobs",
    tag = "media",
    security(("bearer" = [])),
    params(JobsQuery),
    responses(
        (status = 200, description = "The jobs", body = MediaJobs),
        (status = 400, description = "The state or limit is not one the list takes", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        NotAdmin,
    )
)]
pub async fn list_jobs(
    State(state): State<GatewayState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<JobsQuery>,
) -> Result<Json<MediaJobs>, Problem> {
    let media = media(&state)?;
    let job_state = match query.state.as_deref() {
        None => proto::JobState::Unspecified,
        Some(text) => proto::JobState::from_str_name(&format!("JOB_STATE_{}", text.to_uppercase()))
            .filter(|state| *state != proto::JobState::Unspecified)
            .ok_or_else(|| {
                Problem::bad_request("state must be queued, running, done, failed or cancelled")
            })?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::bad_request("limit must be 1 to 500"));
    }
    let answer = MediaClient::new(media.channel())
        .list_jobs(proto::ListJobsRequest {
            state: job_state.into(),
            limit,
        })
        .await
        .map_err(|status| media.problem(&status))?;
    Ok(Json(MediaJobs {
        items: answer
            .into_inner()
            .items
            .into_iter()
            .map(job_view)
            .collect(),
    }))
}

/// What a job route asks of media.
#[derive(Debug, Clone, Copy)]
enum JobCall {
    Get,
    Retry,
    Cancel,
}

/// Job `id` after `call`, as admins see it.
async fn on_job(
    state: &GatewayState,
    id: String,
    call: JobCall,
) -> Result<Json<MediaJob>, Problem> {
    let media = media(state)?;
    if !is_key(&id) {
        return Err(Problem::not_found("there is no media job with that id"));
    }
    let job = proto::JobRef { id };
    let mut client = MediaClient::new(media.channel());
    let answer = match call {
        JobCall::Get => client.get_job(job).await,
        JobCall::Retry => client.retry_job(job).await,
        JobCall::Cancel => client.cancel_job(job).await,
    };
    let job = answer.map_err(|status| media.problem(&status))?;
    Ok(Json(job_view(job.into_inner())))
}

/// One media job: its state, progress, attempts and why it failed.
#[utoipa::path(
    get,
    path = "/api/v1/admin/media/jobs/{id}",
    tag = "media",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = MediaJob),
        Unauthorized,
        NotAdmin,
        (status = 404, description = "There is no such job", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn get_job(
    State(state): State<GatewayState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<MediaJob>, Problem> {
    on_job(&state, id, JobCall::Get).await
}

/// Queues a failed or cancelled job again.
#[utoipa::path(
    post,
    path = "/api/v1/admin/media/jobs/{id}/retry",
    tag = "media",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, queued", body = MediaJob),
        Unauthorized,
        NotAdmin,
        (status = 404, description = "There is no such job", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The job is neither failed nor cancelled", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn retry_job(
    State(state): State<GatewayState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<MediaJob>, Problem> {
    on_job(&state, id, JobCall::Retry).await
}

/// Cancels a queued or running job.
#[utoipa::path(
    post,
    path = "/api/v1/admin/media/jobs/{id}/cancel",
    tag = "media",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, cancelled", body = MediaJob),
        Unauthorized,
        NotAdmin,
        (status = 404, description = "There is no such job", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The job is already done or failed", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_job(
    State(state): State<GatewayState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<MediaJob>, Problem> {
    on_job(&state, id, JobCall::Cancel).await
}

/// What a `Range` header asks of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The whole file: no header, or one this server does not split (several ranges,
    /// another unit).
    Whole,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// No byte of the file can be given.
    Unsatisfiable,
}

/// Which bytes of a file of `size` bytes a `Range` header asks for.
pub fn requested_range(header: Option<&str>, size: u64) -> Requested {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return Requested::Whole;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return Requested::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let last_byte = size.saturating_sub(1);
    if first.is_empty() {
        return match last.parse::<u64>() {
            Ok(suffix) if suffix > 0 && size > 0 => {
                Requested::Part(size.saturating_sub(suffix), last_byte)
            }
            _ => Requested::Unsatisfiable,
        };
    }
    let start = first.parse::<u64>();
    let end = if last.is_empty() {
        Ok(last_byte)
    } else {
        last.parse::<u64>().map(|end| end.min(last_byte))
    };
    match (start, end) {
        (Ok(start), Ok(end)) if start < size && start <= end => Requested::Part(start, end),
        _ => Requested::Unsatisfiable,
    }
}

/// A media file (a cover, a preview, a poster, a playlist or one of its segments).
///
/// Files are named by their content, so they never change: they are cached for a year and
/// validated by ETag. `Range` asks for part of one (206).
#[utoipa::path(
    get,
    path = "/media/{asset}/{rendition}",
    tag = "media",
    params(
        ("asset" = String, Path, description = "The asset's id"),
        ("rendition" = String, Path, description = "The file's name, as the product's media lists it"),
        SignedLink,
    ),
    responses(
        (status = 200, description = "The whole file"),
        (status = 206, description = "The requested bytes"),
        (status = 304, description = "The copy the client has is current"),
        (status = 403, description = "The file is sold as a download and the link is missing, forged, expired or for a cancelled order", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "There is no such file", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 416, description = "The range asks for no byte of the file", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn file(
    State(state): State<GatewayState>,
    Path((asset, name)): Path<(String, String)>,
    ApiQuery(link): ApiQuery<SignedLink>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let media = media(&state)?;
    let not_found = || Problem::not_found("there is no such media file");
    if !is_key(&asset) || !comb_contracts::media::is_rendition_name(&name) {
        return Err(not_found());
    }
    let grant = link.grant();
    let mut client = MediaClient::new(media.channel());
    let rendition = client
        .stat_rendition(proto::RenditionRef {
            asset_id: asset.clone(),
            name: name.clone(),
            grant: grant.clone(),
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => not_found(),
            _ => media.problem(&status),
        })?
        .into_inner();
    let etag = format!("\"{}\"", rendition.sha256);
    let size = rendition.bytes;
    let mut response_headers = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            response_headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    if rendition.public {
        set(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    } else {
        // A buyer's file: no shared cache keeps it, and the browser saves it.
        set(header::CACHE_CONTROL, "private, no-store");
        set(
            header::CONTENT_DISPOSITION,
            &format!("attachment; filename=\"{}\"", rendition.name),
        );
    }
    set(header::ACCEPT_RANGES, "bytes");
    set(header::CONTENT_TYPE, &rendition.content_type);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    // A range applies only while the file is the one the client has part of.
    let range = match headers
        .get(header::IF_RANGE)
        .and_then(|value| value.to_str().ok())
    {
        Some(tag) if tag.trim() != etag => None,
        _ => range,
    };
    let (status, start, end) = match requested_range(range, size) {
        Requested::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        Requested::Whole => (StatusCode::OK, 0, size),
        Requested::Unsatisfiable => {
            let mut refused = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "Range Not Satisfiable",
                format!("the file has {size} bytes; ask for a range inside them"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                refused.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(refused);
        }
    };
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    set(header::CONTENT_LENGTH, &(end - start).to_string());
    let body = if end > start {
        let chunks = client
            .read_rendition(proto::ReadRenditionRequest {
                asset_id: asset,
                name,
                offset: start,
                length: end - start,
                grant,
            })
            .await
            .map_err(|status| media.problem(&status))?
            .into_inner();
        Body::from_stream(
            chunks.map(|chunk| chunk.map(|chunk| axum::body::Bytes::from(chunk.data))),
        )
    } else {
        Body::empty()
    };
    Ok((status, response_headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_the_http_rules_say() {
        use Requested::{Part, Unsatisfiable, Whole};
        assert_eq!(requested_range(None, 100), Whole);
        assert_eq!(requested_range(Some("bytes=0-9"), 100), Part(0, 9));
        assert_eq!(requested_range(Some("bytes=90-"), 100), Part(90, 99));
        assert_eq!(requested_range(Some("bytes=-10"), 100), Part(90, 99));
        assert_eq!(requested_range(Some("bytes=-500"), 100), Part(0, 99));
        assert_eq!(requested_range(Some("bytes=50-500"), 100), Part(50, 99));
        assert_eq!(requested_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(requested_range(Some("bytes=9-0"), 100), Unsatisfiable);
        assert_eq!(requested_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(requested_range(Some("bytes=x-"), 100), Unsatisfiable);
        assert_eq!(requested_range(Some("bytes=0-1,5-6"), 100), Whole);
        assert_eq!(requested_range(Some("items=0-1"), 100), Whole);
    }

    #[test]
    fn only_the_upload_route_streams() {
        assert!(is_upload_path("/api/v1/admin/products/p-1/media"));
        assert!(!is_upload_path("/api/v1/admin/products/p-1"));
        assert!(!is_upload_path("/api/v1/admin/products//media"));
        assert!(!is_upload_path("/api/v1/admin/products/a/b/media"));
    }
}
