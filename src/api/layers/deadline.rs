//! The server's own limit on how long a call may take, on top of any
//! `grpc-timeout` the client sends (which tonic enforces). A call that
//! runs out is answered DEADLINE_EXCEEDED; like a client cancelling, it may
//! or may not have taken effect, and a retry with the same `message_id`
//! is safe.

use std::time::Duration;

use super::{Guard, GuardFuture, GuardLayer, HttpRequest, Inner, Refusal, refuse};

/// Calls whose request is a stream. Their response only comes once the
/// client has finished sending, so a deadline would cut an import that is
/// merely long; they are bounded by the client instead.
const CLIENT_STREAMING: [&str; 3] = [
    "/sightline.v1.ProfileService/Ingest",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

pub type DeadlineLayer = GuardLayer<Deadline>;

impl DeadlineLayer {
    pub fn new(timeout: Duration) -> DeadlineLayer {
        GuardLayer(Deadline { timeout })
    }
}

#[derive(Clone)]
pub struct Deadline {
    timeout: Duration,
}

impl Guard for Deadline {
    fn guard<S: Inner>(&self, request: HttpRequest, mut inner: S) -> GuardFuture<S::Error> {
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
