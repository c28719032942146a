//! One HTTP/2 connection to one instance of another service, carrying every gRPC call to
//! it: made on the first call and made again when it breaks. Calls go straight onto the
//! connection (no queue or worker task in between), which is most of what a call costs
//! on the caller's side once the work itself is cheap.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Why a call could not be sent or answered.
pub type CallError = Box<dyn std::error::Error + Send + Sync>;

/// Why an address cannot be called.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not a URL: {1}")]
    Invalid(String, http::uri::InvalidUri),
    #[error("{0:?} must be http://HOST:PORT")]
    Unsupported(String),
}

/// The connection to one instance.
#[derive(Debug)]
pub struct Connection {
    scheme: Scheme,
    authority: Authority,
    connect_timeout: Duration,
    sender: Mutex<Option<SendRequest<tonic::body::Body>>>,
    /// One connection attempt at a time; the others wait for its outcome.
    connecting: tokio::sync::Mutex<()>,
}

impl Connection {
    /// A connection to `url` (`http://host:port`), not opened until the first call.
    pub fn new(url: &str, connect_timeout: Duration) -> Result<Self, AddressError> {
        let uri: Uri = url
            .parse()
            .map_err(|error| AddressError::Invalid(url.to_owned(), error))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(AddressError::Unsupported(url.to_owned()));
        };
        if *scheme != Scheme::HTTP {
            return Err(AddressError::Unsupported(url.to_owned()));
        }
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
            connect_timeout,
            sender: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends one request (its URI a path, as gRPC clients make them) and returns the
    /// answer, opening the connection first if there is none.
    pub async fn send(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, CallError> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()?;
        let mut sender = self.sender().await?;
        sender.ready().await?;
        let response = sender
            .send_request(http::Request::from_parts(parts, body))
            .await?;
        Ok(response.map(tonic::body::Body::new))
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<tonic::body::Body>, CallError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        // Someone else may have connected while this call waited.
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let address = self.authority.as_str();
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| {
                format!(
                    "connecting to {address} took longer than {:?}",
                    self.connect_timeout
                )
            })??;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await?;
        let address = address.to_owned();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%address, %error, "a connection to an upstream instance ended");
            }
        });
        *self.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    fn open(&self) -> Option<SendRequest<tonic::body::Body>> {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_addresses_are_callable() {
        assert!(Connection::new("http://127.0.0.1:8080", Duration::from_secs(1)).is_ok());
        assert!(Connection::new("https://example.com", Duration::from_secs(1)).is_err());
        assert!(Connection::new("127.0.0.1:8080", Duration::from_secs(1)).is_err());
        assert!(Connection::new("not a url", Duration::from_secs(1)).is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let connection =
            Connection::new(&format!("http://{address}"), Duration::from_secs(1)).expect("valid");
        let error = connection
            .send(http::Request::new(tonic::body::Body::empty()))
            .await
            .expect_err("nothing listens");
        let refused = error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        assert!(refused, "{error}");
    }
}
