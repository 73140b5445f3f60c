//! The HTTPS server of the discovery documents (the `server` feature): an axum router on
//! hyper's HTTP/1.1, behind [`tern_runtime::listener`], which gives it what every front-end
//! has: implicit TLS with a handshake timeout, the PROXY protocol behind a load balancer,
//! connections per client address, and a graceful shutdown.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=…` | [`autoconfig`](crate::autoconfig) |
//! | `GET /mail/config-v1.1.xml?emailaddress=…` (on `autoconfig.<domain>`) | the same |
//! | `POST /autodiscover/autodiscover.xml` (also `/Autodiscover/Autodiscover.xml`) | [`autodiscover`](crate::autodiscover) |
//! | `GET /apple/mail.mobileconfig?emailaddress=…` | [`mobileconfig`](crate::mobileconfig) |
//! | `GET /.well-known/mta-sts.txt` (on `mta-sts.<domain>`) | [`mta_sts`](crate::mta_sts) |
//!
//! The documents are answered before login and for any domain: they only say where the
//! servers are, which DNS says too. What a client sends is checked ([`crate::address`]) and
//! refused with a 400 and a reason, never repeated; request bodies stop at
//! [`MAX_REQUEST`](crate::autodiscover::MAX_REQUEST) bytes, headers must arrive within
//! [`HEADER_TIMEOUT`], and a connection lasts at most [`CONNECTION_TIMEOUT`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::BytesMut;
use tern_runtime::{
    listener::{self, Handler, ListenerLimits},
    stream::Stream,
};
use tokio::sync::watch;

use crate::{Address, Endpoints, address, autoconfig, autodiscover, mobileconfig};

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may last, its requests and bodies included: the documents are
/// small, and a client that needs longer is holding a connection open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the TLS handshake (and the PROXY header before it) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection buffers (the request line and headers must fit).
const MAX_BUFFER: usize = 32 * 1024;

/// One listening socket of the discovery server.
pub type Listener = listener::Listener<()>;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections_per_ip: usize,
    /// How long shutdown waits for requests in progress.
    pub shutdown_grace: Duration,
}

/// The router that answers the documents for `endpoints`, on any transport.
pub fn router(endpoints: Arc<Endpoints>) -> Router {
    Router::new()
        .route("/.well-known/autoconfig/mail/config-v1.1.xml", get(autoconfig_document))
        .route("/mail/config-v1.1.xml", get(autoconfig_document))
        .route("/autodiscover/autodiscover.xml", post(autodiscover_response))
        .route("/Autodiscover/Autodiscover.xml", post(autodiscover_response))
        .route("/apple/mail.mobileconfig", get(apple_profile))
        .route("/.well-known/mta-sts.txt", get(mta_sts_policy))
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "not found") })
        .with_state(endpoints)
}

/// Serves the documents for `endpoints` on `listeners` with the front-ends' certificate (`tls`,
/// offered here with ALPN `http/1.1`) until `shutdown` turns true.
pub async fn serve(
    endpoints: Endpoints,
    tls: Arc<rustls::ServerConfig>,
    listeners: Vec<Listener>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    // A copy of the configuration shares its certificate resolver, so a renewed certificate
    // reaches this server as it reaches the others.
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener_limits = ListenerLimits {
        max_connections_per_ip: limits.max_connections_per_ip,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        shutdown_grace: limits.shutdown_grace,
    };
    let https = Https { router: router(Arc::new(endpoints)) };
    listener::serve(listeners, https, Some(Arc::new(tls)), listener_limits, shutdown).await;
}

struct Https {
    router: Router,
}

impl Handler<()> for Https {
    fn protocol(&self, _kind: &()) -> &'static str {
        "https"
    }

    fn implicit_tls(&self, _kind: &()) -> bool {
        true
    }

    fn too_many_connections(&self, _kind: &()) -> Vec<u8> {
        // Said before the TLS handshake, where no client could read it: the connection is
        // just closed.
        Vec::new()
    }

    async fn session(
        &self,
        _kind: (),
        stream: Stream,
        peer: SocketAddr,
        _early: BytesMut,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let service = hyper_util::service::TowerToHyperService::new(self.router.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_BUFFER)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        tokio::pin!(connection);
        let deadline = tokio::time::sleep(CONNECTION_TIMEOUT);
        tokio::pin!(deadline);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "discovery connection ended with an error");
                    }
                    return;
                }
                // Dropping the connection closes it.
                () = &mut deadline => return,
                // The request in progress is answered, then the connection closes.
                () = listener::stopped(&mut shutdown), if !stopping => {
                    connection.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
        }
    }
}

/// A short plain-text answer.
fn plain(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")];
    (status, headers, format!("{message}\n")).into_response()
}

/// A document, with its content type.
fn document(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// The mail domain a request's `Host` names, without its port and without `prefix`
/// (`autoconfig.`), when it is a domain.
fn host_domain(headers: &HeaderMap, prefix: &str) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    // A name with a port, never an IPv6 literal: those are no mail domain.
    let host = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let host = match host.get(..prefix.len()) {
        Some(start) if start.eq_ignore_ascii_case(prefix) => &host[prefix.len()..],
        _ => host,
    };
    address::mail_domain(host).ok()
}

async fn autoconfig_document(State(endpoints): State<Arc<Endpoints>>, uri: Uri, headers: HeaderMap) -> Response {
    let domain = match address::query_param(uri.query(), "emailaddress") {
        Some(given) => match Address::parse(given.trim()) {
            Ok(address) => address.domain().to_string(),
            Err(e) => return plain(StatusCode::BAD_REQUEST, format_args!("emailaddress: {e}")),
        },
        // Without an address, the domain of `autoconfig.<domain>` (or of the host itself, for
        // the well-known path on the mail domain).
        None => match host_domain(&headers, "autoconfig.") {
            Some(domain) => domain,
            None => {
                return plain(StatusCode::BAD_REQUEST, "give the address as ?emailaddress=local-part@domain");
            }
        },
    };
    document(autoconfig::CONTENT_TYPE, autoconfig::document(&endpoints, &domain))
}

async fn autodiscover_response(State(endpoints): State<Arc<Endpoints>>, body: Body) -> Response {
    let Ok(body) = axum::body::to_bytes(body, autodiscover::MAX_REQUEST).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, autodiscover::RequestError::TooLarge);
    };
    match autodiscover::parse_request(&body) {
        Ok(request) => document(autodiscover::CONTENT_TYPE, autodiscover::response(&endpoints, &request.address)),
        Err(e) => plain(StatusCode::BAD_REQUEST, e),
    }
}

async fn apple_profile(State(endpoints): State<Arc<Endpoints>>, uri: Uri) -> Response {
    match address::from_query(uri.query(), "emailaddress") {
        Ok(address) => {
            let mut response = document(mobileconfig::CONTENT_TYPE, mobileconfig::profile(&endpoints, &address));
            response.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"mail.mobileconfig\""),
            );
            response
        }
        Err(e) => plain(StatusCode::BAD_REQUEST, format_args!("emailaddress: {e}")),
    }
}

async fn mta_sts_policy(State(endpoints): State<Arc<Endpoints>>) -> Response {
    match &endpoints.mta_sts {
        Some(policy) => {
            let mut response = document("text/plain; charset=utf-8", policy.policy());
            // Senders cache the policy for max_age themselves, refreshed by the TXT record's id.
            response.headers_mut().remove(header::CACHE_CONTROL);
            response
        }
        None => plain(StatusCode::NOT_FOUND, "no MTA-STS policy is published here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_names_the_domain() {
        let headers = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            h
        };
        assert_eq!(host_domain(&headers("autoconfig.Example.com:8443"), "autoconfig.").as_deref(), Some("example.com"));
        assert_eq!(host_domain(&headers("example.org"), "autoconfig.").as_deref(), Some("example.org"));
        assert_eq!(host_domain(&headers("127.0.0.1:8443"), "autoconfig."), None);
        assert_eq!(host_domain(&headers("[::1]:8443"), "autoconfig."), None);
        assert_eq!(host_domain(&headers("a<b.example"), "autoconfig."), None);
        assert_eq!(host_domain(&HeaderMap::new(), "autoconfig."), None);
    }
}
