//! Tower layers around the whole gRPC server, outermost first:
//!
//! 1. [`AccessLogLayer`] writes one structured line per call (method,
//!    status code, latency, token name), including calls refused below.
//! 2. [`ShedLayer`] admits at most `limits.calls_in_flight_max` calls at
//!    once; the rest are answered RESOURCE_EXHAUSTED at once.
//! 3. [`AuthLayer`] checks the bearer token and its scopes against the
//!    method table and puts the [`crate::security::Caller`] into the request.
//! 4. [`DeadlineLayer`] enforces `limits.call_timeout_ms`.
//! 5. [`RecoverLayer`] answers a panicking handler with INTERNAL.
//!
//! They sit on the HTTP level because only there is the method path known
//! before a handler runs (a tonic interceptor does not see it). Refusals
//! are trailers-only gRPC responses; their codes come from
//! [`super::refusal_status`], next to the handlers' error mapping.

mod access_log;
mod auth;
mod deadline;
mod recover;
mod shed;

pub use access_log::AccessLogLayer;
pub use auth::AuthLayer;
pub use deadline::DeadlineLayer;
pub use recover::RecoverLayer;
pub use shed::ShedLayer;

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{Refusal, refusal_status};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

type HttpRequest = http::Request<Body>;
type HttpResponse = http::Response<Body>;

/// A trailers-only gRPC response: the call ends here and its handler never
/// runs (or its answer is replaced).
fn refuse(refusal: Refusal) -> HttpResponse {
    refusal_status(refusal).into_http()
}

/// The gRPC status a response header map or trailer map carries, if any.
fn grpc_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(tonic::Code::from)
}

/// What one layer does with a call. It is handed the inner service, ready
/// and taken for this call alone, and answers with the response (its own,
/// or the inner one's, possibly wrapped).
pub trait Guard: Clone + Send + Sync + 'static {
    fn guard<S: Inner>(&self, request: HttpRequest, inner: S) -> GuardFuture<S::Error>;
}

/// The service a guard wraps: the routes, or the next layer in.
pub trait Inner:
    Service<HttpRequest, Response = HttpResponse, Future: Send + 'static, Error: Send + 'static>
    + Send
    + 'static
{
}

impl<S> Inner for S where
    S: Service<HttpRequest, Response = HttpResponse, Future: Send + 'static, Error: Send + 'static>
        + Send
        + 'static
{
}

type GuardFuture<E> = BoxFuture<Result<HttpResponse, E>>;

/// A [`Guard`] as a tower layer.
#[derive(Clone, Default)]
pub struct GuardLayer<G>(G);

impl<G: Clone, S> Layer<S> for GuardLayer<G> {
    type Service = Guarded<G, S>;

    fn layer(&self, inner: S) -> Guarded<G, S> {
        Guarded {
            guard: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Guarded<G, S> {
    guard: G,
    inner: S,
}

impl<G, S> Service<HttpRequest> for Guarded<G, S>
where
    G: Guard,
    S: Service<HttpRequest, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = GuardFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        // Take the ready inner service for this call and leave a fresh
        // clone behind for the next, as tower requires.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        self.guard.guard(request, inner)
    }
}
