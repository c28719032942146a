//! The blob store: every file media keeps (masters and renditions), named by the SHA-256
//! of its bytes. A file is written under a temporary name and committed (renamed to its
//! digest) only once complete, so no reader ever sees part of one, and writing the same
//! bytes twice keeps one copy.

use std::ops::Range;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

/// Why the blob store failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the blob store at {location} cannot be opened: {source}")]
    Open {
        location: String,
        source: object_store::Error,
    },
    #[error("the blob store failed: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0:?} is not a SHA-256 digest")]
    NotADigest(String),
}

/// Media's files, wherever they are kept.
#[derive(Debug, Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

/// A file being written: its bytes go to a temporary name while their digest is taken.
pub struct BlobWriter {
    store: Arc<dyn ObjectStore>,
    staging: Path,
    upload: WriteMultipart,
    digest: Sha256,
    bytes: u64,
}

/// A file committed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Hex SHA-256 of the bytes: the file's name.
    pub sha256: String,
    pub bytes: u64,
}

/// How to reach an S3-compatible bucket; what is not given comes from the standard AWS
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// An S3-compatible server's address (MinIO, Ceph, a cloud's); plain `http://` is
    /// allowed when named here.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl Blobs {
    /// The store at `location`: an S3-compatible bucket (`s3://bucket[/prefix]`), or a
    /// local directory (a path, or a `file://` URL), created when missing.
    pub fn open(location: &str, s3: &S3Options) -> Result<Self, BlobError> {
        let open_error = |source| BlobError::Open {
            location: location.to_owned(),
            source,
        };
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_http_connector(PlainHttpConnector);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let bucket_store = builder.build().map_err(open_error)?;
            let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                Arc::new(bucket_store)
            } else {
                Arc::new(PrefixStore::new(bucket_store, prefix.trim_matches('/')))
            };
            return Ok(Self { store });
        }
        let directory = location.strip_prefix("file://").unwrap_or(location);
        std::fs::create_dir_all(directory).map_err(|error| {
            open_error(object_store::Error::Generic {
                store: "local directory",
                source: Box::new(error),
            })
        })?;
        let store = LocalFileSystem::new_with_prefix(directory).map_err(open_error)?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    /// Starts writing a new file.
    pub async fn writer(&self) -> Result<BlobWriter, BlobError> {
        let staging = Path::from(format!("incoming/{}", uuid::Uuid::new_v4()));
        let upload = self.store.put_multipart(&staging).await?;
        Ok(BlobWriter {
            store: Arc::clone(&self.store),
            staging,
            upload: WriteMultipart::new(upload),
            digest: Sha256::new(),
            bytes: 0,
        })
    }

    /// Writes a whole file held in memory (a drawn cover, a small rendition).
    pub async fn put(&self, bytes: &[u8]) -> Result<Stored, BlobError> {
        let mut writer = self.writer().await?;
        writer.write(bytes).await?;
        writer.commit().await
    }

    /// The size of the file named `sha256`, or None when there is none.
    pub async fn size(&self, sha256: &str) -> Result<Option<u64>, BlobError> {
        match self.store.head(&location(sha256)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// `range` of the file named `sha256`, as a stream of chunks.
    pub async fn read(
        &self,
        sha256: &str,
        range: Range<u64>,
    ) -> Result<
        futures_util::stream::BoxStream<'static, Result<bytes::Bytes, object_store::Error>>,
        BlobError,
    > {
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..Default::default()
        };
        let found = self.store.get_opts(&location(sha256)?, options).await?;
        Ok(found.into_stream())
    }

    /// The whole file named `sha256` copied to `to` on the local disk (a worker's input).
    pub async fn copy_to_file(&self, sha256: &str, to: &std::path::Path) -> Result<u64, BlobError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let size = self.size(sha256).await?.unwrap_or(0);
        let mut chunks = self.read(sha256, 0..size).await?;
        let mut file = tokio::fs::File::create(to).await.map_err(generic)?;
        while let Some(chunk) = chunks.next().await {
            file.write_all(&chunk?).await.map_err(generic)?;
        }
        file.flush().await.map_err(generic)?;
        Ok(size)
    }

    /// A local file stored under its digest.
    pub async fn put_file(&self, from: &std::path::Path) -> Result<Stored, BlobError> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(from).await.map_err(generic)?;
        let mut writer = self.writer().await?;
        let mut buffer = vec![0; 256 * 1024];
        loop {
            let read = file.read(&mut buffer).await.map_err(generic)?;
            if read == 0 {
                break;
            }
            writer.write(&buffer[..read]).await?;
        }
        writer.commit().await
    }
}

/// Sends a bucket's requests with hyper over plain HTTP: an S3-compatible server inside the
/// deployment (MinIO, Ceph, or a TLS-terminating proxy in front of a cloud's), without a
/// TLS stack in the build.
#[derive(Debug)]
struct PlainHttpConnector;

impl object_store::client::HttpConnector for PlainHttpConnector {
    fn connect(
        &self,
        _options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(object_store::client::HttpClient::new(PlainHttp(client)))
    }
}

#[derive(Debug)]
struct PlainHttp(
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        object_store::client::HttpRequestBody,
    >,
);

#[tonic::async_trait]
impl object_store::client::HttpService for PlainHttp {
    async fn call(
        &self,
        request: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        use http_body_util::BodyExt;
        use object_store::client::{HttpError, HttpErrorKind, HttpResponseBody};
        if request.uri().scheme_str() != Some("http") {
            return Err(HttpError::new(
                HttpErrorKind::Connect,
                std::io::Error::other("buckets are reached over http:// (media_s3_endpoint)"),
            ));
        }
        let response = self
            .0
            .request(request)
            .await
            .map_err(|error| HttpError::new(HttpErrorKind::Request, error))?;
        Ok(response.map(|body| {
            HttpResponseBody::new(
                http_body_util::combinators::BoxBody::new(body)
                    .map_err(|error| HttpError::new(HttpErrorKind::Decode, error)),
            )
        }))
    }
}

fn generic(error: std::io::Error) -> BlobError {
    BlobError::Store(object_store::Error::Generic {
        store: "local file",
        source: Box::new(error),
    })
}

/// Where the file with this digest lives; refuses anything but 64 hex digits, so no name
/// from outside ever becomes a path.
fn location(sha256: &str) -> Result<Path, BlobError> {
    if sha256.len() != 64 || !sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(BlobError::NotADigest(sha256.to_owned()));
    }
    Ok(Path::from(format!("sha256/{}/{sha256}", &sha256[..2])))
}

impl BlobWriter {
    /// Appends bytes, waiting while earlier ones are still being written.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.upload.wait_for_capacity(4).await?;
        self.digest.update(bytes);
        self.bytes += bytes.len() as u64;
        self.upload.write(bytes);
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Finishes the file and names it by its digest; the same bytes already stored are
    /// kept, and this copy dropped.
    pub async fn commit(self) -> Result<Stored, BlobError> {
        let sha256 = hex(&self.digest.finalize());
        self.upload.finish().await?;
        let final_location = location(&sha256)?;
        match self
            .store
            .rename_if_not_exists(&self.staging, &final_location)
            .await
        {
            Ok(()) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.store.delete(&self.staging).await?;
            }
            // A bucket without conditional copies: the name is the content, so replacing
            // a file with the same bytes changes nothing a reader can see.
            Err(
                object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. },
            ) => {
                self.store.rename(&self.staging, &final_location).await?;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(Stored {
            sha256,
            bytes: self.bytes,
        })
    }

    /// Gives up on the file: its temporary copy is removed.
    pub async fn abort(self) {
        if let Err(error) = self.upload.abort().await {
            tracing::debug!(%error, "an abandoned upload could not be aborted");
        }
        if let Err(error) = self.store.delete(&self.staging).await {
            tracing::debug!(%error, "an abandoned upload left a temporary file");
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn files_are_named_by_their_digest_and_read_by_range() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let blobs = Blobs::open(
            &directory.path().display().to_string(),
            &S3Options::default(),
        )
        .expect("store");
        let stored = blobs.put(b"hello, media").await.expect("put");
        assert_eq!(stored.sha256, hex(&Sha256::digest(b"hello, media")));
        assert_eq!(stored.bytes, 12);
        let again = blobs.put(b"hello, media").await.expect("put again");
        assert_eq!(again, stored);
        assert_eq!(blobs.size(&stored.sha256).await.expect("size"), Some(12));
        let mut read = Vec::new();
        let mut chunks = blobs.read(&stored.sha256, 7..12).await.expect("read");
        while let Some(chunk) = chunks.next().await {
            read.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(read, b"media");
        let leftovers = std::fs::read_dir(directory.path().join("incoming"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 0, "no temporary file is left behind");
    }

    #[tokio::test]
    async fn only_digests_name_files() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let blobs = Blobs::open(
            &directory.path().display().to_string(),
            &S3Options::default(),
        )
        .expect("store");
        for name in ["../../etc/passwd", "abc", &"g".repeat(64)] {
            assert!(matches!(
                blobs.size(name).await,
                Err(BlobError::NotADigest(_))
            ));
        }
    }
}
