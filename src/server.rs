//! Assembles the gRPC server: the Sightline services, standard health and
//! reflection. `run` takes its edges (listener, configuration, clock,
//! shutdown signal) as arguments so that tests start a real server on an
//! ephemeral port with a temporary data directory and a controlled clock.

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::api::{AdminApi, ProfileApi, pb};
use crate::computed::LifecycleThresholds;
use crate::config::{Config, ConfigError};
use crate::identity::{MergeRules, Normalizer};
use crate::metrics::{self, Metrics, RequestMetricsLayer};
use crate::model::Clock;
use crate::service::ProfileService;
use crate::store::{ProfileStore, SledStore, SledStoreOptions, StoreError};

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
    #[error("cannot listen for metrics on {address}: {source}")]
    MetricsListen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Serves `GET /metrics` when configured.
async fn spawn_metrics(
    config: &Config,
    metrics: Arc<Metrics>,
    service: Arc<ProfileService>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServerError> {
    let Some(address) = config.metrics.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::MetricsListen { address, source })?;
    tracing::info!(address = ?listener.local_addr().ok(), "serving metrics");
    Ok(Some(tokio::spawn(metrics::serve(
        listener, metrics, service,
    ))))
}

/// Refreshes RFM quintiles and applies retention every `interval_secs`
/// (never when 0). A failed run is logged and retried at the next tick.
fn spawn_maintenance(
    service: Arc<ProfileService>,
    interval_secs: u64,
) -> Option<tokio::task::JoinHandle<()>> {
    if interval_secs == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let period = std::time::Duration::from_secs(interval_secs);
        // The first run waits a full period: start-up stays fast.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            ticks.tick().await;
            match service.run_maintenance().await {
                Ok(report) => tracing::info!(
                    customers = report.customers,
                    events_removed = report.events_removed,
                    "maintenance done"
                ),
                Err(error) => tracing::warn!(%error, "maintenance failed"),
            }
        }
    }))
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
type AdminServer = pb::admin_service_server::AdminServiceServer<AdminApi>;

/// Serves until `shutdown` resolves, then stops accepting calls, lets the
/// ones in flight finish, and returns once every acknowledged write is
/// durable and the database is closed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    config.validate()?;
    let merge_rules = MergeRules::new(&config.identity.merge, &config.identity.fuzzy);
    let options = SledStoreOptions {
        merge_rules: merge_rules.clone(),
        data_dir: config.data_dir.clone(),
        cache_capacity_bytes: config.storage.cache_capacity_bytes,
        write_queue_depth: config.storage.write_queue_depth,
        group_commit_calls_max: config.storage.group_commit_calls_max,
    };
    let store: Arc<SledStore> =
        Arc::new(tokio::task::spawn_blocking(move || SledStore::open(&options)).await??);
    let normalizer = Normalizer::new(&config.identity, config.limits.identifier_value_bytes_max);
    let service = Arc::new(
        ProfileService::new(
            store.clone(),
            normalizer,
            merge_rules,
            config.limits.clone(),
            clock,
        )
        .with_computed(
            LifecycleThresholds {
                active_days: config.computed.active_days,
                lapsing_days: config.computed.lapsing_days,
            },
            config.computed.event_retention_days,
        ),
    );
    service
        .load_rfm()
        .map_err(|error| ServerError::Maintenance(error.to_string()))?;
    let maintenance = spawn_maintenance(
        Arc::clone(&service),
        config.computed.maintenance_interval_secs,
    );

    // The database is open: only now do health checks report SERVING.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ProfileServer>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let request_metrics = Arc::new(Metrics::new());
    let metrics_task =
        spawn_metrics(&config, Arc::clone(&request_metrics), Arc::clone(&service)).await?;

    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, data_dir = %config.data_dir.display(), "serving");
    let shutdown_health = health.clone();
    tonic::transport::Server::builder()
        .layer(RequestMetricsLayer::new(request_metrics))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AdminServer::new(AdminApi::new(Arc::clone(&service))))
        .add_service(ProfileServer::new(ProfileApi::new(service)))
        .serve_with_incoming_shutdown(incoming_without_delay(listener), async move {
            shutdown.await;
            tracing::info!("shutting down: finishing calls in flight");
            shutdown_health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            shutdown_health.set_not_serving::<ProfileServer>().await;
        })
        .await?;

    for task in [maintenance, metrics_task].into_iter().flatten() {
        task.abort();
        // Wait until it is gone, so that nothing holds the store past close.
        let _ = task.await;
    }
    tokio::task::spawn_blocking(move || store.close()).await??;
    tracing::info!("stopped; every acknowledged write is durable");
    Ok(())
}
