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
use tower::{Layer, Service};

use super::{BoxFuture, HttpRequest, HttpResponse, Refusal, refuse, take_ready};

/// Health checks bypass the limit: an orchestrator must see an overloaded
/// server as alive, not restart it.
const UNCOUNTED_PREFIX: &str = "/grpc.health.v1.Health/";

#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    pub fn new(calls_in_flight_max: usize) -> ShedLayer {
        ShedLayer {
            permits: Arc::new(Semaphore::new(calls_in_flight_max)),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            permits: Arc::clone(&self.permits),
        }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S> Service<HttpRequest> for Shed<S>
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
