//! Assembles the gRPC server: the Sightline services, standard health and
//! reflection, TLS, and the layers in front of every call (access log,
//! load shedding, authentication, deadline, panic recovery; see
//! [`crate::api::layers`]). `run` takes its edges (listener,
//! configuration, clock, shutdown signal) as arguments so that tests start
//! a real server on an ephemeral port with a temporary data directory and
//! a controlled clock.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::api::layers::{AccessLogLayer, AuthLayer, DeadlineLayer, RecoverLayer, ShedLayer};
use crate::api::{AdminApi, PrivacyApi, ProfileApi, RecommendationApi, SegmentApi, pb};
use crate::computed::{LifecycleThresholds, RfmCache};
use crate::config::{Config, ConfigError, Exposure, TlsConfig};
use crate::http::{self, HttpApi};
use crate::identity::{MergeRules, Normalizer};
use crate::metrics::{self, Metrics, RequestMetricsLayer};
use crate::model::Clock;
use crate::personalisation::RecommendationService;
use crate::privacy::{AccessLog, PrivacyService};
use crate::segments::{SegmentRegistry, SegmentService};
use crate::service::ProfileService;
use crate::store::sealing::cipher::SecretKey;
use crate::store::sealing::master::{
    GENERATED_MASTER_KEY_FILE, MASTER_KEY_VARIABLE, MasterKeySource,
};
use crate::store::{
    KEY_STORE_FILE, ProfileStore, SealingOptions, SledStore, SledStoreOptions, StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot load maintenance state: {0}")]
    Maintenance(String),
    #[error("listener: {0}")]
    Listener(std::io::Error),
    #[error("cannot read {path}: {source}")]
    TlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP TLS: {0}")]
    HttpTls(#[from] crate::http::TlsError),
    #[error("cannot listen for HTTP on {address}: {source}")]
    HttpListen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for metrics on {address}: {source}")]
    MetricsListen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn read_pem(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

fn server_tls(tls: &TlsConfig) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let identity = Identity::from_pem(read_pem(&tls.cert_path)?, read_pem(&tls.key_path)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(client_ca_path) = &tls.client_ca_path {
        config = config.client_ca_root(Certificate::from_pem(read_pem(client_ca_path)?));
    }
    Ok(config)
}

/// Says how exposed the server is, loudly when it should not be.
fn log_exposure(exposure: Exposure, tls: bool) {
    match exposure {
        Exposure::LoopbackWithoutAuth => tracing::warn!(
            "authentication is off: no [auth] tokens are configured, so every local \
             process may call every method; allowed on loopback addresses only"
        ),
        Exposure::Protected => tracing::info!(tls, "bearer tokens required"),
        Exposure::Insecure => tracing::error!(
            tls,
            "INSECURE: serving on a non-loopback address without TLS or without tokens \
             (--insecure); anyone who can reach it may read or change profiles, or see tokens"
        ),
    }
}

/// Serves `GET /metrics` when configured.
async fn spawn_metrics(
    config: &Config,
    listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
    service: Arc<ProfileService>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServerError> {
    let listener = match (listener, config.metrics.listen) {
        (Some(listener), _) => listener,
        (None, Some(address)) => TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::MetricsListen { address, source })?,
        (None, None) => return Ok(None),
    };
    tracing::info!(address = ?listener.local_addr().ok(), "serving metrics");
    Ok(Some(tokio::spawn(metrics::serve(
        listener, metrics, service,
    ))))
}

/// Serves the HTTP API when configured, until `stop` says so.
async fn spawn_http(
    config: &Config,
    listener: Option<TcpListener>,
    api: impl FnOnce() -> HttpApi,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>, ServerError> {
    // The same exposure rules as gRPC: an exposed listener must not accept
    // even one connection.
    let tls = config
        .tls
        .as_ref()
        .map(http::tls_server_config)
        .transpose()?;
    let listener = match (listener, config.http.listen) {
        (Some(listener), _) => {
            let address = listener.local_addr().map_err(ServerError::Listener)?;
            log_exposure(config.exposure(address)?, tls.is_some());
            listener
        }
        (None, Some(address)) => {
            log_exposure(config.exposure(address)?, tls.is_some());
            TcpListener::bind(address)
                .await
                .map_err(|source| ServerError::HttpListen { address, source })?
        }
        (None, None) => return Ok(None),
    };
    let address = listener.local_addr().map_err(ServerError::Listener)?;
    tracing::info!(%address, tls = tls.is_some(), "serving HTTP");
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    Ok(Some(tokio::spawn(http::serve(
        listener,
        Arc::new(api()),
        tls,
        shutdown,
    ))))
}

/// Runs `job` every `interval_secs` (never when 0); the first run waits a
/// full period, so start-up stays fast. A failed run is the job's to log;
/// the next tick tries again.
fn spawn_every<F, Fut>(interval_secs: u64, mut job: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    if interval_secs == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let period = Duration::from_secs(interval_secs);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            ticks.tick().await;
            job().await;
        }
    }))
}

/// Refreshes RFM quintiles and applies event retention.
fn spawn_maintenance(
    service: Arc<ProfileService>,
    interval_secs: u64,
) -> Option<tokio::task::JoinHandle<()>> {
    spawn_every(interval_secs, move || {
        let service = Arc::clone(&service);
        async move {
            match service.run_maintenance().await {
                Ok(report) => tracing::info!(
                    customers = report.customers,
                    events_removed = report.events_removed,
                    "maintenance done"
                ),
                Err(error) => tracing::warn!(%error, "maintenance failed"),
            }
        }
    })
}

/// Accepted connections with Nagle's algorithm off: small gRPC responses
/// would otherwise wait for the peer's delayed ACK (~40 ms on Linux).
/// tonic sets this only on listeners it binds itself.
fn incoming_without_delay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot disable Nagle's algorithm on a connection");
        }
        Ok(stream)
    })
}

type ProfileServer = pb::profile_service_server::ProfileServiceServer<ProfileApi>;
type SegmentServer = pb::segment_service_server::SegmentServiceServer<SegmentApi>;
type PrivacyServer = pb::privacy_service_server::PrivacyServiceServer<PrivacyApi>;
type RecommendationServer =
    pb::recommendation_service_server::RecommendationServiceServer<RecommendationApi>;

/// Re-evaluates time-dependent segment rules and applies access-log
/// retention.
fn spawn_sweep(
    segments: Arc<SegmentService>,
    privacy: Arc<PrivacyService>,
    interval_secs: u64,
) -> Option<tokio::task::JoinHandle<()>> {
    spawn_every(interval_secs, move || {
        let (segments, privacy) = (Arc::clone(&segments), Arc::clone(&privacy));
        async move {
            match segments.sweep().await {
                Ok(profiles) => tracing::info!(profiles, "segment sweep done"),
                Err(error) => tracing::warn!(%error, "segment sweep failed"),
            }
            match privacy.expire_access_log().await {
                Ok(removed) => tracing::info!(removed, "access log retention applied"),
                Err(error) => tracing::warn!(%error, "access log retention failed"),
            }
        }
    })
}

/// Where a restore reads later erasures from: a database URL, or a
/// directory (a newer backup or a stopped embedded server's data).
pub fn privacy_source(config: &Config, source: String) -> crate::store::PrivacySource {
    if source.starts_with("postgres://") || source.starts_with("postgresql://") {
        crate::store::PrivacySource::Database(database_options(config, source))
    } else {
        crate::store::PrivacySource::Directory(source.into())
    }
}

fn database_options(config: &Config, url: String) -> crate::store::PostgresOptions {
    crate::store::PostgresOptions {
        url,
        read_connections: config.storage.pool_size,
        statement_timeout: std::time::Duration::from_millis(config.storage.statement_timeout_ms),
        connect_timeout: std::time::Duration::from_millis(config.storage.connect_timeout_ms),
        ca_file: config.storage.ca_file.clone(),
    }
}

/// How the configured store is opened, for serving and for restoring.
pub fn store_options(
    config: &Config,
    merge_rules: MergeRules,
) -> Result<SledStoreOptions, ConfigError> {
    Ok(SledStoreOptions {
        merge_rules,
        data_dir: config.data_dir.clone(),
        cache_capacity_bytes: config.storage.cache_capacity_bytes,
        database: config
            .storage
            .url
            .clone()
            .map(|url| database_options(config, url)),
        write_queue_depth: config.storage.write_queue_depth,
        group_commit_calls_max: config.storage.group_commit_calls_max,
        suppression_key: config.privacy.suppression_key_bytes()?,
        recommendations: config.recommendations.enabled,
        sealing: sealing_options(config)?,
    })
}

/// Where the master key and the data keys come from.
fn sealing_options(config: &Config) -> Result<SealingOptions, ConfigError> {
    let master_key = match std::env::var(MASTER_KEY_VARIABLE) {
        Ok(text) if !text.is_empty() => {
            MasterKeySource::Given(SecretKey::from_hex(&text).ok_or_else(|| {
                ConfigError::Invalid(format!("{MASTER_KEY_VARIABLE}: expected 64 hex digits"))
            })?)
        }
        _ => match &config.privacy.master_key_file {
            Some(path) => MasterKeySource::File(path.clone()),
            None => MasterKeySource::Generated(config.data_dir.join(GENERATED_MASTER_KEY_FILE)),
        },
    };
    Ok(SealingOptions {
        master_key,
        key_store_file: config
            .privacy
            .key_store_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(KEY_STORE_FILE)),
        seal_values: !config.privacy.unsealed_for_benchmarks,
    })
}

type AdminServer = pb::admin_service_server::AdminServiceServer<AdminApi>;

/// The sockets a server answers on, bound by the caller.
pub struct Listeners {
    pub grpc: TcpListener,
    /// The HTTP API's; when `None`, `[http] listen` is bound if set.
    pub http: Option<TcpListener>,
    /// The metrics endpoint's; when `None`, `[metrics] listen` is bound if
    /// set.
    pub metrics: Option<TcpListener>,
}

/// Serves until `shutdown` resolves, then stops accepting calls, lets the
/// ones in flight finish, and returns once every acknowledged write is
/// durable and the database is closed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let listeners = Listeners {
        grpc: listener,
        http: None,
        metrics: None,
    };
    run_on(listeners, config, clock, shutdown).await
}

/// [`run`] on sockets bound by the caller, the HTTP one included.
pub async fn run_on(
    listeners: Listeners,
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let Listeners {
        grpc: listener,
        http: http_listener,
        metrics: metrics_listener,
    } = listeners;
    config.validate()?;
    let address = listener.local_addr().map_err(ServerError::Listener)?;
    let exposure = config.exposure(address)?;
    let tokens = config.token_set()?;
    let tls = config.tls.as_ref().map(server_tls).transpose()?;
    let merge_rules = MergeRules::new(&config.identity.merge, &config.identity.fuzzy);
    let options = store_options(&config, merge_rules.clone())?;
    let lifecycle = LifecycleThresholds {
        active_days: config.computed.active_days,
        lapsing_days: config.computed.lapsing_days,
    };
    let rfm = RfmCache::default();
    let registry = Arc::new(SegmentRegistry::new(
        Arc::clone(&clock),
        lifecycle,
        Arc::clone(&rfm),
    ));
    let rules = Arc::clone(&registry);
    let custom_traits: Arc<dyn crate::model::CustomTraitRules> =
        Arc::clone(registry.custom_traits()) as _;
    let store: Arc<SledStore> = Arc::new(
        tokio::task::spawn_blocking(move || SledStore::open_with_segments(&options, rules))
            .await??,
    );
    let normalizer = Normalizer::new(&config.identity, config.limits.identifier_value_bytes_max);
    let service = Arc::new(
        ProfileService::new(
            store.clone(),
            normalizer,
            merge_rules,
            config.limits.clone(),
            Arc::clone(&clock),
        )
        .with_computed(lifecycle, config.computed.event_retention_days)
        .with_rfm_cache(rfm)
        .with_backup_root(config.storage.backup_dir.clone())
        .with_custom_traits(custom_traits),
    );
    service
        .load_rfm()
        .map_err(|error| ServerError::Maintenance(error.to_string()))?;
    let segments = Arc::new(SegmentService::new(
        store.clone(),
        registry,
        Arc::clone(&service),
        config.segments.clone(),
        clock,
    ));
    segments
        .load()
        .and_then(|()| segments.load_computed_traits())
        .map_err(|error| ServerError::Maintenance(error.to_string()))?;
    let maintenance = spawn_maintenance(
        Arc::clone(&service),
        config.computed.maintenance_interval_secs,
    );
    let privacy = Arc::new(PrivacyService::new(
        store.clone(),
        Arc::clone(&service),
        Arc::clone(&segments),
        config.privacy.clone(),
    ));
    let sweep = spawn_sweep(
        Arc::clone(&segments),
        Arc::clone(&privacy),
        config.segments.sweep_interval_secs,
    );
    let (access_log, access_log_task) = AccessLog::start(store.clone());
    let recommendations = Arc::new(RecommendationService::new(
        store.clone(),
        Arc::clone(&service),
        Arc::clone(&segments),
        config.recommendations.clone(),
    ));

    // The database is open: only now do health checks report SERVING.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ProfileServer>().await;
    health.set_serving::<SegmentServer>().await;
    health.set_serving::<PrivacyServer>().await;
    health.set_serving::<RecommendationServer>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let request_metrics = Arc::new(Metrics::new().with_access_log(access_log.counts()));
    let metrics_task = spawn_metrics(
        &config,
        metrics_listener,
        Arc::clone(&request_metrics),
        Arc::clone(&service),
    )
    .await?;
    let admin_api = AdminServer::new(AdminApi::new(Arc::clone(&service)));
    // Turns true on shutdown: the HTTP listener and open Ingest streams
    // stop, and the drain time starts.
    let (stopping, stopping_seen) = tokio::sync::watch::channel(false);
    spawn_write_health(store.write_health(), health.clone(), stopping_seen.clone());
    let http_task = spawn_http(
        &config,
        http_listener,
        || {
            HttpApi::new(
                Arc::clone(&service),
                tokens.clone(),
                config.http.clone(),
                config.limits.calls_in_flight_max,
            )
            .with_segments(Arc::clone(&segments))
            .with_access_log(access_log.clone())
            .with_metrics(Arc::clone(&request_metrics))
        },
        stopping_seen.clone(),
    )
    .await?;

    let limits = &config.limits;
    let read_clock = Arc::clone(service.clock());
    let recommendation_api = RecommendationServer::new(
        RecommendationApi::new(recommendations, Arc::clone(service.clock()))
            .with_access_log(access_log.clone()),
    )
    .max_decoding_message_size(limits.request_message_bytes_max)
    .max_encoding_message_size(limits.response_message_bytes_max);
    let profiles = ProfileServer::new(
        ProfileApi::new(service)
            .with_stopping(stopping_seen.clone())
            .with_segments(Arc::clone(&segments))
            .with_privacy(Arc::clone(&privacy))
            .with_access_log(access_log.clone()),
    )
    .max_decoding_message_size(limits.request_message_bytes_max)
    .max_encoding_message_size(limits.response_message_bytes_max);
    let watches = Arc::clone(&segments);
    let segment_api = SegmentServer::new(
        SegmentApi::new(segments).with_access_log(access_log.clone(), read_clock),
    )
    .max_decoding_message_size(limits.request_message_bytes_max)
    .max_encoding_message_size(limits.response_message_bytes_max);
    let privacy_api = PrivacyServer::new(PrivacyApi::new(privacy).with_access_log(access_log))
        .max_decoding_message_size(limits.request_message_bytes_max)
        .max_encoding_message_size(limits.response_message_bytes_max);
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.streams_per_connection_max));
    let tls_enabled = tls.is_some();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }

    log_exposure(exposure, tls_enabled);
    match &config.storage.url {
        Some(url) => tracing::info!(
            %address,
            tls = tls_enabled,
            store = %format!("postgres {}", crate::store::engine::postgres::describe_url(url)),
            "serving"
        ),
        None => tracing::info!(
            %address,
            tls = tls_enabled,
            data_dir = %config.data_dir.display(),
            "serving"
        ),
    }
    let shutdown_health = health.clone();
    let serving = builder
        .layer(RequestMetricsLayer::new(request_metrics))
        .layer(AccessLogLayer::default())
        .layer(ShedLayer::new(limits.calls_in_flight_max))
        .layer(AuthLayer::new(tokens))
        .layer(DeadlineLayer::new(Duration::from_millis(
            limits.call_timeout_ms,
        )))
        .layer(RecoverLayer::default())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(profiles)
        .add_service(segment_api)
        .add_service(privacy_api)
        .add_service(recommendation_api)
        .add_service(admin_api)
        .serve_with_incoming_shutdown(incoming_without_delay(listener), async move {
            shutdown.await;
            tracing::info!("shutting down: finishing calls in flight");
            stopping.send_replace(true);
            watches.close_watches();
            shutdown_health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            shutdown_health.set_not_serving::<ProfileServer>().await;
            shutdown_health.set_not_serving::<SegmentServer>().await;
            shutdown_health.set_not_serving::<PrivacyServer>().await;
            shutdown_health
                .set_not_serving::<RecommendationServer>()
                .await;
        });
    // Calls still open when the drain time is over are cut: a client that
    // never ends its stream must not keep the server from stopping.
    let drain = Duration::from_millis(limits.shutdown_drain_ms);
    let mut drain_started = stopping_seen;
    let drained = async move {
        let _ = drain_started.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        served = serving => served?,
        () = drained => tracing::warn!(
            drain_ms = drain.as_millis() as u64,
            "calls still open after the drain time were ended"
        ),
    }

    if let Some(mut http_task) = http_task {
        // It finishes the calls in flight (their writes are acknowledged),
        // within the drain time too.
        match tokio::time::timeout(drain, &mut http_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "HTTP listener stopped with an error"),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => {
                tracing::warn!("HTTP calls still open after the drain time were ended");
                http_task.abort();
            }
        }
    }
    for task in [maintenance, sweep, metrics_task].into_iter().flatten() {
        task.abort();
        // Wait until it is gone, so that nothing holds the store past close.
        let _ = task.await;
    }
    // The server and its handles to the access log are gone: the log writes
    // what is queued and ends.
    let _ = access_log_task.await;
    tokio::task::spawn_blocking(move || store.close()).await??;
    tracing::info!("stopped; every acknowledged write is durable");
    Ok(())
}

/// Health follows the writer: while writes fail (a full disk, a database
/// away), the server reports NOT_SERVING, though reads go on; once a write
/// succeeds again, SERVING. A stopping server stays NOT_SERVING.
fn spawn_write_health(
    mut write_health: tokio::sync::watch::Receiver<Option<String>>,
    health: tonic_health::server::HealthReporter,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        while write_health.changed().await.is_ok() {
            if *stopping.borrow() {
                return;
            }
            let status = match write_health.borrow_and_update().as_deref() {
                Some(reason) => {
                    tracing::warn!(%reason, "writes fail: health reports NOT_SERVING");
                    ServingStatus::NotServing
                }
                None => {
                    tracing::info!("writes succeed again: health reports SERVING");
                    ServingStatus::Serving
                }
            };
            health.set_service_status("", status).await;
            use tonic::server::NamedService;
            for name in [
                <ProfileServer as NamedService>::NAME,
                <SegmentServer as NamedService>::NAME,
                <PrivacyServer as NamedService>::NAME,
                <RecommendationServer as NamedService>::NAME,
            ] {
                health.set_service_status(name, status).await;
            }
        }
    });
}
