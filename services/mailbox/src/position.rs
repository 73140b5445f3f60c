//! Read-your-writes across replicas: the `tern-position` token.
//!
//! In the distributed backend each replica keeps the accounts it serves current from one
//! subscription to the log ([`crate::store::nats`]), so a read needs no round trip to NATS.
//! The subscription runs a little behind the log: a client that wrote through one replica and
//! reads through another could otherwise read a state from before its own write.
//!
//! Every answer therefore carries the log position the state it reflects had reached
//! (`tern-position` in the response headers), every client sends back the highest position it
//! was told (`tern-position` in the request headers; `tern_runtime::rpc` does this), and a
//! replica answers a read from memory only once its subscription has reached that position.
//! A request without a position (an older client, `grpcurl`) is answered from a state read
//! from the log itself, as before.
//!
//! The position travels from the request to the store in a task-local set by [`PositionLayer`],
//! so the storage trait does not change; a backend without positions (embedded: one writer,
//! reads always current) ignores it.

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
};

use tower::{Layer, Service};

/// The header, on requests and responses.
pub const HEADER: &str = "tern-position";

struct Request {
    /// The position the client has been told of; 0 when it sent none.
    min: u64,
    /// The highest position this request's answer reflects.
    seen: AtomicU64,
}

tokio::task_local! {
    static REQUEST: Request;
}

/// The position the current request asks a read to reflect at least; 0 outside a request or
/// when the client sent none.
pub fn min() -> u64 {
    REQUEST.try_with(|r| r.min).unwrap_or(0)
}

/// Records that the current request's answer reflects the log up to `position`.
pub fn saw(position: u64) {
    let _ = REQUEST.try_with(|r| r.seen.fetch_max(position, Ordering::Relaxed));
}

/// Runs `f` as a request that asks for at least `min`, and returns what it saw with its output
/// (for tests of the backends, which run without the gRPC layer).
pub async fn scope<F: Future>(min: u64, f: F) -> (F::Output, u64) {
    REQUEST
        .scope(Request { min, seen: AtomicU64::new(0) }, async move {
            let out = f.await;
            let seen = REQUEST.with(|r| r.seen.load(Ordering::Relaxed));
            (out, seen)
        })
        .await
}

/// The tower layer of the mailbox server that reads a request's position and writes its
/// answer's.
#[derive(Debug, Clone, Default)]
pub struct PositionLayer;

impl<S> Layer<S> for PositionLayer {
    type Service = PositionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PositionService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct PositionService<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for PositionService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let min = request.headers().get(HEADER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let future = self.inner.call(request);
        Box::pin(async move {
            let (result, seen) = scope(min, future).await;
            result.map(|mut response| {
                if seen > 0 {
                    response.headers_mut().insert(HEADER, http::HeaderValue::from(seen));
                }
                response
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_sees_the_highest_position_recorded() {
        assert_eq!(min(), 0, "outside a request");
        saw(7); // outside a request: nothing to record, and no panic
        let ((), seen) = scope(5, async {
            assert_eq!(min(), 5);
            saw(9);
            saw(3);
        })
        .await;
        assert_eq!(seen, 9);
    }
}
