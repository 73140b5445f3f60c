//! Opening the mailbox service on a backend and serving it over gRPC.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tern_proto::v1::{admin_server::AdminServer, mailbox_server::MailboxServer};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::{
    MailboxService,
    blobs::BlobStore,
    error::Result,
    grpc::{admin::AdminApi, mailbox::MailboxApi},
    service::Limits,
    store::embedded::EmbeddedStore,
};

/// Largest gRPC message either side accepts: a Select of a very large folder, or a chunk.
const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

/// Opens the embedded backend in `data_dir`: `metadata.redb` and `blobs/`.
pub fn open_embedded(data_dir: &std::path::Path, limits: Limits) -> Result<MailboxService> {
    let blobs = BlobStore::local(PathBuf::from(data_dir).join("blobs"))?;
    open_embedded_with_blobs(data_dir, blobs, limits)
}

/// Opens the embedded metadata store in `data_dir` (`metadata.redb`) with bodies in `blobs`,
/// which may be anywhere (see [`BlobStore::open`]).
pub fn open_embedded_with_blobs(
    data_dir: &std::path::Path,
    blobs: BlobStore,
    limits: Limits,
) -> Result<MailboxService> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        crate::MailboxError::Commit(format!("cannot create data directory {}: {e}", data_dir.display()))
    })?;
    let store = EmbeddedStore::open(&data_dir.join("metadata.redb"))?;
    let blobs = blobs.with_read_cache(limits.blob_cache_bytes);
    Ok(MailboxService::new(Arc::new(store), blobs, limits).with_fulltext(data_dir.join("index"), false))
}

/// Opens the distributed backend: metadata in NATS JetStream at `url`, one server or a
/// comma-separated list of a cluster's servers (stream and buckets named
/// after `prefix`, on `replicas` JetStream servers), bodies in `blobs`.
pub async fn open_nats(
    url: &str,
    prefix: &str,
    replicas: usize,
    blobs: BlobStore,
    limits: Limits,
) -> Result<MailboxService> {
    let connection = crate::store::nats::NatsConnection::from_urls(url)?;
    open_nats_with(&connection, prefix, replicas, blobs, limits).await
}

/// [`open_nats`] with credentials and TLS: the servers of `connection`, reached as it says.
pub async fn open_nats_with(
    connection: &crate::store::nats::NatsConnection,
    prefix: &str,
    replicas: usize,
    blobs: BlobStore,
    limits: Limits,
) -> Result<MailboxService> {
    let store = crate::store::nats::NatsStore::connect(connection, prefix, replicas).await?;
    let blobs = blobs.with_read_cache(limits.blob_cache_bytes);
    // The replica's copy of the shared indexes is a cache: a directory of its own, so that
    // two replicas on one machine (tests, `tern dev` beside a cluster) never share one.
    static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cache = std::env::temp_dir().join(format!("tern-index-{prefix}-{}-{n}", std::process::id()));
    Ok(MailboxService::new(Arc::new(store), blobs, limits).with_fulltext(cache, true))
}

/// How the gRPC API is protected: mutual TLS, and the Admin API's token.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    /// Serve over TLS and require client certificates signed by the internal CA.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Admin calls must carry `authorization: Bearer <token>`; without one the Admin API is
    /// open to whoever reaches the port (`tern dev` on loopback).
    pub admin_token: Option<String>,
}

/// Serves the Mailbox and Admin gRPC services on `listener` until `shutdown` completes, and
/// collects unreferenced bodies in the background.
pub async fn serve(
    service: MailboxService,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), tonic::transport::Error> {
    serve_protected(service, listener, Protection::default(), shutdown).await
}

/// [`serve`] with TLS and the Admin API's token.
pub async fn serve_protected(
    service: MailboxService,
    listener: TcpListener,
    protection: Protection,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), tonic::transport::Error> {
    let gc_service = service.clone();
    let gc = tokio::spawn(async move {
        // The first sweep waits a whole period: a replica that starts (or restarts in a
        // rolling update) has nothing urgent to collect, and sweeping at once would race a
        // sweep its operator or a test starts by hand.
        let period = Duration::from_secs(600);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            match gc_service.collect_garbage().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "collected unreferenced bodies"),
                Err(e) => tracing::warn!(error = %e, "body collection failed"),
            }
        }
    });
    let mailbox = MailboxServer::new(MailboxApi::new(service.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let token = protection.admin_token.clone();
    let admin = AdminServer::with_interceptor(AdminApi::new(service), move |request: tonic::Request<()>| {
        if let Some(token) = &token {
            tern_runtime::rpc::check_token(token, &request)?;
        }
        Ok(request)
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = protection.tls {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        .trace_fn(server_span)
        .layer(tern_runtime::grpc_metrics::GrpcMetricsLayer)
        .layer(crate::position::PositionLayer)
        .add_service(mailbox)
        .add_service(admin)
        // Without TCP_NODELAY a streamed response (headers, data, trailers) waits on Nagle's
        // algorithm and the peer's delayed ACK: about 40 ms per FetchBody.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60))),
            shutdown,
        )
        .await;
    gc.abort();
    result
}

/// The Mailbox and Admin services for callers in this process (`tern_runtime::rpc::local`):
/// the same routes, metrics, positions, admin token and request spans as [`serve_protected`]
/// gives them over the network, without a socket between caller and service.
pub fn local_service(service: MailboxService, admin_token: Option<String>) -> tern_runtime::rpc::LocalService {
    let mailbox = MailboxServer::new(MailboxApi::new(service.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let admin = AdminServer::with_interceptor(AdminApi::new(service), move |request: tonic::Request<()>| {
        if let Some(token) = &admin_token {
            tern_runtime::rpc::check_token(token, &request)?;
        }
        Ok(request)
    });
    let routes = tonic::service::Routes::new(mailbox).add_service(admin).prepare();
    let layered = tower::ServiceBuilder::new()
        .layer(tern_runtime::grpc_metrics::GrpcMetricsLayer)
        .layer(crate::position::PositionLayer)
        .service(routes);
    let traced = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let span = request_span(request.uri().path(), request.headers());
        let call = tower::ServiceExt::oneshot(layered.clone(), request);
        tracing::Instrument::instrument(call, span)
    });
    tower::util::BoxCloneSyncService::new(traced)
}

/// The span of one gRPC request, named after the method as OpenTelemetry's RPC conventions say
/// (`tern.mailbox.v1.Mailbox/Deliver`), of kind server, and the child of the caller's span when
/// the request carries its trace context (see [`tern_runtime::propagation`]).
fn server_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    request_span(request.uri().path(), request.headers())
}

fn request_span(path: &str, headers: &http::HeaderMap) -> tracing::Span {
    let method = path.trim_start_matches('/');
    let span = tracing::info_span!("grpc", otel.name = method, otel.kind = "server");
    tern_runtime::propagation::set_remote_parent(&span, headers);
    span
}
