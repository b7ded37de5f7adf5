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

use std::{future::Future, pin::Pin};

use tonic::body::Body;

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

/// The usual service shape: take the ready inner service for this call and
/// leave a fresh clone behind for the next, as tower requires.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
