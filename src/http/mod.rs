//! The HTTP/1.1 surface: the Segment-spec tracking API that existing
//! analytics SDKs send to unchanged, and JSON reads of profiles. It sits
//! beside the gRPC API on the same use cases (`service`, `segments`,
//! `privacy`); only this module knows axum.

mod auth;
mod profiles;
mod reply;
pub mod segment_spec;
mod tls;
mod tracking;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use reply::HttpError;
use reply::json_response;
pub use tls::{TlsError, server_config as tls_server_config};

use crate::config::HttpConfig;
use crate::metrics::Metrics;
use crate::privacy::AccessLog;
use crate::security::{Scope, TokenSet};
use crate::segments::SegmentService;
use crate::service::ProfileService;
use profiles::ProfileQuery;
use segment_spec::MessageType;

pub struct HttpApi {
    service: Arc<ProfileService>,
    /// Memberships in profile reads, when attached.
    segments: Option<Arc<SegmentService>>,
    /// Reads of profiles are logged here, when attached.
    access_log: Option<AccessLog>,
    tokens: TokenSet,
    config: HttpConfig,
    /// Requests are counted here, when attached.
    metrics: Option<Arc<Metrics>>,
    /// Calls being answered; beyond the limit a call is refused with 429 at
    /// once rather than queued without bound.
    in_flight: Semaphore,
}

impl HttpApi {
    pub fn new(
        service: Arc<ProfileService>,
        tokens: TokenSet,
        config: HttpConfig,
        calls_in_flight_max: usize,
    ) -> Self {
        HttpApi {
            service,
            segments: None,
            access_log: None,
            tokens,
            config,
            metrics: None,
            in_flight: Semaphore::new(calls_in_flight_max),
        }
    }

    pub fn with_segments(mut self, segments: Arc<SegmentService>) -> Self {
        self.segments = Some(segments);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn with_access_log(mut self, access_log: AccessLog) -> Self {
        self.access_log = Some(access_log);
        self
    }
}

/// The routes, over one shared API.
pub fn router(api: Arc<HttpApi>) -> Router {
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/import", post(batch))
        .route("/v1/{call}", post(one_message))
        .route("/v1/profiles/{lookup}", get(profile))
        .fallback(not_found)
        .with_state(api)
}

/// Serves until `shutdown` resolves, then lets the calls in flight finish;
/// over TLS when given its settings.
pub async fn serve(
    listener: TcpListener,
    api: Arc<HttpApi>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(tls) = tls {
        return tls::serve(listener, router(api), tls, shutdown).await;
    }
    let listener = listener.tap_io(|stream| {
        // Small answers would otherwise wait for the peer's delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot disable Nagle's algorithm on a connection");
        }
    });
    axum::serve(listener, router(api))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn one_message(
    State(api): State<Arc<HttpApi>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(kind) = MessageType::parse(&call) else {
        return not_found().await;
    };
    let route = match kind {
        MessageType::Identify => "/v1/identify",
        MessageType::Track => "/v1/track",
        MessageType::Page => "/v1/page",
        MessageType::Screen => "/v1/screen",
        MessageType::Alias => "/v1/alias",
        MessageType::Group => "/v1/group",
    };
    answer(&api, route, async {
        let _permit = api
            .in_flight
            .try_acquire()
            .map_err(|_| HttpError::Overloaded)?;
        auth::authorize(&api.tokens, &headers, Scope::EventsWrite)?;
        let body = read_body(body, api.config.message_bytes_max, "message").await?;
        api.one_message(kind, &headers, body).await
    })
    .await
}

async fn batch(State(api): State<Arc<HttpApi>>, headers: HeaderMap, body: Body) -> Response {
    answer(&api, "/v1/batch", async {
        let _permit = api
            .in_flight
            .try_acquire()
            .map_err(|_| HttpError::Overloaded)?;
        auth::authorize(&api.tokens, &headers, Scope::EventsWrite)?;
        let body = read_body(body, api.config.batch_bytes_max, "batch").await?;
        api.batch(&headers, body).await
    })
    .await
}

async fn profile(
    State(api): State<Arc<HttpApi>>,
    Path(lookup): Path<String>,
    query: Result<Query<ProfileQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    answer(&api, "/v1/profiles", async {
        let _permit = api
            .in_flight
            .try_acquire()
            .map_err(|_| HttpError::Overloaded)?;
        let caller = auth::authorize(&api.tokens, &headers, Scope::ProfilesRead)?;
        let Ok(Query(query)) = query else {
            return Err(HttpError::invalid(
                "query",
                "expected fields=<sections>&events_limit=<n>",
            ));
        };
        api.profile(caller, &lookup, query).await
    })
    .await
}

async fn not_found() -> Response {
    HttpError::NotFound(
        "no such resource: the API is POST /v1/{identify,track,page,screen,alias,group,batch,import} \
         and GET /v1/profiles/{kind}:{value} or /v1/profiles/{profile_id}"
            .to_owned(),
    )
    .into_response()
}

async fn answer(
    api: &HttpApi,
    route: &'static str,
    call: impl Future<Output = Result<Value, HttpError>>,
) -> Response {
    let started = std::time::Instant::now();
    let response = match call.await {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(error) => error.into_response(),
    };
    if let Some(metrics) = &api.metrics {
        metrics.observe_http(route, response.status().as_u16(), started.elapsed());
    }
    response
}

/// The whole body, refused once it grows past `bytes_max` (compressed
/// bodies are checked again once decompressed).
async fn read_body(body: Body, bytes_max: usize, what: &str) -> Result<Bytes, HttpError> {
    axum::body::to_bytes(body, bytes_max)
        .await
        .map_err(|_| HttpError::invalid("", format!("a {what} may be at most {bytes_max} bytes")))
}
