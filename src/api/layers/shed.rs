//! Load shedding: a call beyond the in-flight limit is refused at once
//! with RESOURCE_EXHAUSTED instead of queueing, so overload shows up as a
//! fast, retryable answer rather than as growing latency and memory. A
//! refused call never reaches its handler, so nothing it carried was
//! written; a call that got a permit runs to completion.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

use super::{Guard, GuardFuture, GuardLayer, HttpRequest, Inner, Refusal, refuse};

/// Health checks bypass the limit: an orchestrator must see an overloaded
/// server as alive, not restart it.
const UNCOUNTED_PREFIX: &str = "/grpc.health.v1.Health/";

pub type ShedLayer = GuardLayer<Shed>;

impl ShedLayer {
    pub fn new(calls_in_flight_max: usize) -> ShedLayer {
        GuardLayer(Shed {
            permits: Arc::new(Semaphore::new(calls_in_flight_max)),
        })
    }
}

/// Every clone shares the one semaphore.
#[derive(Clone)]
pub struct Shed {
    permits: Arc<Semaphore>,
}

impl Guard for Shed {
    fn guard<S: Inner>(&self, request: HttpRequest, mut inner: S) -> GuardFuture<S::Error> {
        if request.uri().path().starts_with(UNCOUNTED_PREFIX) {
            return Box::pin(inner.call(request));
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Box::pin(std::future::ready(Ok(refuse(Refusal::Overloaded))));
        };
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // The permit lives as long as the response body: a streaming
            // call counts until its stream ends.
            Ok(response.map(|body| {
                Body::new(PermitBody {
                    body,
                    _permit: permit,
                })
            }))
        })
    }
}

struct PermitBody {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
