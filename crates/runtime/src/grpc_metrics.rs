//! A tower layer that counts gRPC requests by method and status and times them, for any tonic
//! server. The status of a gRPC call travels in the `grpc-status` header (trailers-only
//! responses) or in trailers; the header covers errors, and a missing header counts as `0` (OK,
//! or decided later in the trailers).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::metrics::{MethodLabels, MethodOnly, Metrics};

#[derive(Debug, Clone, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for GrpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or("unknown").to_string();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(resp) => resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string(),
                Err(_) => "transport".to_string(),
            };
            let m = Metrics::global();
            m.grpc_latency
                .get_or_create(&MethodOnly { method: method.clone() })
                .observe(started.elapsed().as_secs_f64());
            m.grpc_requests.get_or_create(&MethodLabels { method, code }).inc();
            result
        })
    }
}
