//! One structured log line per call: method, gRPC status code, latency and
//! the caller's token name. Never the token, metadata or message contents.
//! The line is emitted when the call's status is known: at once for a
//! refused call, when the trailers pass for a normal one (so a stream's
//! latency is its whole duration). A response dropped before its status
//! (the client went away) is logged with code `Cancelled`.
//!
//! The target is `sightline::access`, so operators can filter these lines
//! apart, e.g. `SIGHTLINE_LOG=info,sightline::access=warn` to silence them.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::Frame;
use tonic::{Code, body::Body};

use super::{Guard, GuardFuture, GuardLayer, HttpRequest, Inner, grpc_code};
use crate::security::Caller;

pub type AccessLogLayer = GuardLayer<AccessLog>;

#[derive(Clone, Default)]
pub struct AccessLog;

/// What is known of a call until its status arrives.
struct Entry {
    method: String,
    caller: Option<String>,
    started: Instant,
}

impl Entry {
    fn emit(self, code: Code) {
        tracing::info!(
            target: "sightline::access",
            method = %self.method,
            code = ?code,
            latency_us = self.started.elapsed().as_micros() as u64,
            caller = self.caller.as_deref().unwrap_or("-"),
            "call"
        );
    }
}

impl Guard for AccessLog {
    fn guard<S: Inner>(&self, request: HttpRequest, mut inner: S) -> GuardFuture<S::Error> {
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let entry = Entry {
                method,
                caller: response
                    .extensions()
                    .get::<Caller>()
                    .map(|caller| caller.token_name.clone()),
                started,
            };
            // A trailers-only response carries its status in the headers.
            if let Some(code) = grpc_code(response.headers()) {
                entry.emit(code);
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(LoggedBody {
                    body,
                    entry: Some(entry),
                })
            }))
        })
    }
}

struct LoggedBody {
    body: Body,
    /// Taken when the line is emitted.
    entry: Option<Entry>,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    if let Some(entry) = this.entry.take() {
                        entry.emit(code);
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(entry) = this.entry.take() {
                    entry.emit(status.code());
                }
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.emit(Code::Cancelled);
        }
    }
}
