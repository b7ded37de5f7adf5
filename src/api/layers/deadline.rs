//! The server's own limit on how long a call may take, on top of any
//! `grpc-timeout` the client sends (which tonic enforces). A call that
//! runs out is answered DEADLINE_EXCEEDED; like a client cancelling, it may
//! or may not have taken effect, and a retry with the same `message_id`
//! is safe.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use tower::{Layer, Service};

use super::{BoxFuture, HttpRequest, HttpResponse, Refusal, refuse, take_ready};

/// Calls whose request is a stream. Their response only comes once the
/// client has finished sending, so a deadline would cut an import that is
/// merely long; they are bounded by the client instead.
const CLIENT_STREAMING: [&str; 3] = [
    "/sightline.v1.ProfileService/Ingest",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

#[derive(Clone)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    pub fn new(timeout: Duration) -> DeadlineLayer {
        DeadlineLayer { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<HttpRequest> for Deadline<S>
where
    S: Service<HttpRequest, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<Result<HttpResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        if CLIENT_STREAMING.contains(&request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        let response = tokio::time::timeout(self.timeout, inner.call(request));
        Box::pin(async move {
            match response.await {
                Ok(response) => response,
                Err(_elapsed) => Ok(refuse(Refusal::TooSlow)),
            }
        })
    }
}
