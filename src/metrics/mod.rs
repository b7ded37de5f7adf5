//! Operational metrics in the Prometheus text format, served on an optional
//! HTTP port (`[metrics] listen`). Request counts and latencies are
//! recorded by a tower layer around every gRPC service (`layer.rs`); store
//! and ingest figures are read from their owners at scrape time
//! (`render`), so nothing on the write path knows about metrics.
//!
//! The exposition format is a handful of lines per metric; it is written
//! here directly (`text.rs`) rather than through a metrics library, as
//! every value already lives in an atomic or in the request table below.

mod http;
mod layer;
mod text;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use http::serve;
pub use layer::RequestMetricsLayer;

use crate::api::code_name;
use crate::privacy::AccessLogCounts;
use crate::service::ProfileService;
use crate::store::GROUP_SIZE_BOUNDS;
use text::{Exposition, Histogram};

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BOUNDS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Distinct method labels kept. Paths come from callers, so an unbounded
/// set would let anyone grow the table (and every scrape) at will; calls
/// beyond this, and paths that are not `/package.Service/Method`, count
/// under `other`.
const METHODS_MAX: usize = 64;
const METHOD_LABEL_BYTES_MAX: usize = 128;
const OTHER_METHOD: &str = "other";

/// Request counts and latencies since start, by gRPC method and by HTTP
/// route.
#[derive(Debug, Default)]
pub struct Metrics {
    methods: Mutex<BTreeMap<String, MethodStats>>,
    /// Routes are the API's own names (`/v1/batch`), never request paths,
    /// so the table stays as small as the API.
    http_routes: Mutex<BTreeMap<&'static str, HttpStats>>,
    access_log: Option<Arc<AccessLogCounts>>,
}

#[derive(Debug)]
struct HttpStats {
    /// Requests by HTTP status.
    statuses: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Debug)]
struct MethodStats {
    /// Calls by gRPC status code name (`OK`, `INVALID_ARGUMENT`, ...).
    codes: BTreeMap<&'static str, u64>,
    latency: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Reports what became of access-log entries.
    pub fn with_access_log(mut self, counts: Arc<AccessLogCounts>) -> Metrics {
        self.access_log = Some(counts);
        self
    }

    /// Counts one finished call of `path` (`/sightline.v1.ProfileService/Identify`).
    pub fn observe(&self, path: &str, code: tonic::Code, latency: Duration) {
        let Ok(mut methods) = self.methods.lock() else {
            return;
        };
        let well_formed = path.len() <= METHOD_LABEL_BYTES_MAX
            && path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'_'));
        let label = if well_formed && (methods.contains_key(path) || methods.len() < METHODS_MAX) {
            path
        } else {
            OTHER_METHOD
        };
        let stats = methods
            .entry(label.to_owned())
            .or_insert_with(|| MethodStats {
                codes: BTreeMap::new(),
                latency: Histogram::new(&LATENCY_BOUNDS_SECONDS),
            });
        *stats.codes.entry(code_name(code)).or_insert(0) += 1;
        stats.latency.observe(latency.as_secs_f64());
    }
}

impl Metrics {
    /// Counts one answered HTTP request of `route` (`/v1/batch`).
    pub fn observe_http(&self, route: &'static str, status: u16, latency: Duration) {
        let Ok(mut routes) = self.http_routes.lock() else {
            return;
        };
        let stats = routes.entry(route).or_insert_with(|| HttpStats {
            statuses: BTreeMap::new(),
            latency: Histogram::new(&LATENCY_BOUNDS_SECONDS),
        });
        *stats.statuses.entry(status).or_insert(0) += 1;
        stats.latency.observe(latency.as_secs_f64());
    }
}

/// Every metric, as one scrape answer.
pub fn render(metrics: &Metrics, service: &ProfileService) -> String {
    let mut out = Exposition::default();
    if let Ok(methods) = metrics.methods.lock() {
        out.family(
            "sightline_grpc_requests_total",
            "counter",
            "gRPC calls finished, by method and status code.",
        );
        for (method, stats) in methods.iter() {
            for (code, count) in &stats.codes {
                out.sample(
                    "sightline_grpc_requests_total",
                    &[("method", method), ("code", code)],
                    *count as f64,
                );
            }
        }
        out.family(
            "sightline_grpc_request_duration_seconds",
            "histogram",
            "Time from receiving a call to sending its response headers, by method.",
        );
        for (method, stats) in methods.iter() {
            out.histogram(
                "sightline_grpc_request_duration_seconds",
                &[("method", method)],
                &stats.latency,
            );
        }
    }

    if let Ok(routes) = metrics.http_routes.lock() {
        out.family(
            "sightline_http_requests_total",
            "counter",
            "HTTP API requests answered, by route and status.",
        );
        for (route, stats) in routes.iter() {
            for (status, count) in &stats.statuses {
                out.sample(
                    "sightline_http_requests_total",
                    &[("route", route), ("status", &status.to_string())],
                    *count as f64,
                );
            }
        }
        out.family(
            "sightline_http_request_duration_seconds",
            "histogram",
            "Time from receiving an HTTP request to answering it, by route.",
        );
        for (route, stats) in routes.iter() {
            out.histogram(
                "sightline_http_request_duration_seconds",
                &[("route", route)],
                &stats.latency,
            );
        }
    }

    if let Some(access_log) = &metrics.access_log {
        out.single(
            "sightline_access_log_entries_written_total",
            "counter",
            "Reads of profiles written to the access log.",
            access_log.written() as f64,
        );
        out.single(
            "sightline_access_log_waits_total",
            "counter",
            "Reads that waited for room in the full access-log queue.",
            access_log.waited() as f64,
        );
        out.single(
            "sightline_access_log_entries_lost_total",
            "counter",
            "Access-log entries the store refused twice (see the error log).",
            access_log.lost() as f64,
        );
    }

    let ingest = service.ingest_counts();
    out.family(
        "sightline_ingest_items_total",
        "counter",
        "Ingest stream items, by outcome.",
    );
    for (outcome, count) in [
        ("accepted", ingest.accepted),
        ("duplicate", ingest.duplicate),
        ("rejected", ingest.rejected),
    ] {
        out.sample(
            "sightline_ingest_items_total",
            &[("outcome", outcome)],
            count as f64,
        );
    }

    let store = service.store_stats();
    out.single(
        "sightline_profiles",
        "gauge",
        "Live profiles (merged-away and erased ones are not counted).",
        store.writer.live_profiles as f64,
    );
    out.single(
        "sightline_profiles_merged_total",
        "counter",
        "Profiles merged away by identify and track calls, fuzzy merges on them included.",
        store.writer.profiles_merged as f64,
    );
    out.single(
        "sightline_write_groups_total",
        "counter",
        "Group commits made durable.",
        store.writer.groups_committed as f64,
    );
    out.single(
        "sightline_write_group_retries_total",
        "counter",
        "Groups run again after their transaction conflicted with another server's writes.",
        store.writer.groups_retried as f64,
    );
    out.single(
        "sightline_blob_files_synced_total",
        "counter",
        "Files the database wrote large values to, synced before the writes were acknowledged.",
        store.writer.blob_files_synced as f64,
    );
    out.single(
        "sightline_write_queue_depth",
        "gauge",
        "Write commands waiting for the writer.",
        store.write_queue_depth as f64,
    );
    out.single(
        "sightline_write_queue_capacity",
        "gauge",
        "Write commands that can wait before callers are held back.",
        store.write_queue_capacity as f64,
    );
    let mut group_sizes = Histogram::new(&GROUP_SIZE_BOUNDS.map(|bound| bound as f64));
    group_sizes.set_counts(
        &store.writer.group_sizes,
        store.writer.calls_committed as f64,
    );
    out.family(
        "sightline_write_group_calls",
        "histogram",
        "Calls made durable together per group commit.",
    );
    out.histogram("sightline_write_group_calls", &[], &group_sizes);
    out.single(
        "sightline_database_size_bytes",
        "gauge",
        "Size of the database files on disk.",
        store.size_on_disk_bytes as f64,
    );
    out.single(
        "sightline_recommender_products",
        "gauge",
        "Products the recommendation model knows.",
        store.recommender.products as f64,
    );
    out.single(
        "sightline_recommender_neighbour_links",
        "gauge",
        "Co-occurrence neighbours held in memory (at most 50 per product).",
        store.recommender.neighbour_links as f64,
    );
    out.single(
        "sightline_recommender_memory_bytes",
        "gauge",
        "Approximate memory of the recommendation model.",
        store.recommender.approximate_bytes as f64,
    );
    out.finish()
}
