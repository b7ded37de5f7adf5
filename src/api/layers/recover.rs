//! A panic in a handler (or in the stream it returns) ends that call with
//! INTERNAL instead of resetting the stream, and the server keeps serving.
//! The panic is logged with the method only: its message may quote request
//! data.

use std::{
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::FutureExt;
use http_body::Frame;
use tonic::body::Body;

use super::{Guard, GuardFuture, GuardLayer, HttpRequest, Inner, Refusal, refusal_status, refuse};

pub type RecoverLayer = GuardLayer<Recover>;

#[derive(Clone, Default)]
pub struct Recover;

/// tonic answers a request it cannot decode (nested past the decoder's
/// recursion limit, or malformed) with INTERNAL, but the fault is the
/// caller's.
fn is_undecodable_request(headers: &http::HeaderMap) -> bool {
    tonic::Status::from_header_map(headers).is_some_and(|status| {
        status.code() == tonic::Code::Internal
            && status
                .message()
                .starts_with("failed to decode Protobuf message")
    })
}

fn log_panic(method: &str) {
    tracing::error!(method, "call panicked; answered INTERNAL");
}

impl Guard for Recover {
    fn guard<S: Inner>(&self, request: HttpRequest, mut inner: S) -> GuardFuture<S::Error> {
        let method = request.uri().path().to_owned();
        let response = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
            Ok(response) => response,
            Err(_panic) => {
                log_panic(&method);
                return Box::pin(std::future::ready(Ok(refuse(Refusal::Panicked))));
            }
        };
        Box::pin(async move {
            match AssertUnwindSafe(response).catch_unwind().await {
                Ok(Ok(response)) if is_undecodable_request(response.headers()) => {
                    Ok(refuse(Refusal::Undecodable))
                }
                Ok(response) => Ok(response?.map(|body| {
                    Body::new(RecoverBody {
                        body,
                        method,
                        finished: false,
                    })
                })),
                Err(_panic) => {
                    log_panic(&method);
                    Ok(refuse(Refusal::Panicked))
                }
            }
        })
    }
}

/// Ends a response stream whose producer panicked with INTERNAL trailers.
struct RecoverBody {
    body: Body,
    method: String,
    /// Set after a panic: the inner body is never polled again.
    finished: bool,
}

impl http_body::Body for RecoverBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let body = &mut this.body;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(body).poll_frame(cx))) {
            Ok(frame) => frame,
            Err(_panic) => {
                this.finished = true;
                log_panic(&this.method);
                let mut trailers = http::HeaderMap::new();
                // Adding a fixed status and message to a header map cannot fail.
                let _ = refusal_status(Refusal::Panicked).add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, Service};

    use super::super::{BoxFuture, HttpResponse};
    use super::*;

    /// A stand-in for the routes: panics on one path, answers OK otherwise.
    #[derive(Clone)]
    struct Handlers;

    impl Service<HttpRequest> for Handlers {
        type Response = HttpResponse;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<HttpResponse, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: HttpRequest) -> Self::Future {
            let panics = request.uri().path() == "/panics";
            Box::pin(async move {
                assert!(!panics, "handler bug quoting jane@example.com");
                Ok(tonic::Status::ok("").into_http())
            })
        }
    }

    fn request(path: &str) -> HttpRequest {
        http::Request::builder()
            .uri(path)
            .body(Body::default())
            .expect("request")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_internal_and_the_next_call_served() {
        let mut service = RecoverLayer::default().layer(Handlers);
        let response = service.call(request("/panics")).await.unwrap();
        assert_eq!(
            super::super::grpc_code(response.headers()),
            Some(tonic::Code::Internal)
        );
        let response = service.call(request("/fine")).await.unwrap();
        assert_eq!(
            super::super::grpc_code(response.headers()),
            Some(tonic::Code::Ok)
        );
    }
}
