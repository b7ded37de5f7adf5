//! The HTTP API beside the gRPC API it stands next to, on the same server
//! in the same run: durable ingest through `POST /v1/batch` (Segment-spec
//! batches of 100 track calls, as the SDKs send them) against the same
//! events through `Ingest`, and `GET /v1/profiles/email:…` against
//! `GetProfile` at 16 calls in flight. Run with `cargo bench --bench http`.
//!
//! Sizes come from the environment: `BENCH_RUNS` (default 3),
//! `BENCH_EVENTS` (events per ingest measurement, default 50000),
//! `BENCH_PROFILES` (people, default 10000), `BENCH_READ_SECONDS`
//! (default 5, after 1 s of warm-up). Which API ingests first alternates
//! between runs, so that the growing database favours neither.

mod common;

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sightline::api::pb::{self, ingest_request::Item};

use common::calls::GetProfile;
use common::measure::{
    CALLS_IN_FLIGHT, Caller, Check, Row, closed_loop, closed_loop_over, median, print_table,
};
use common::population::{identifier, mix, number, text};
use common::{connect, env_number, free_port, start_server_with};

/// Messages per `/v1/batch` request, as the SDKs' default flush size.
const BATCH_MESSAGES: u64 = 100;
/// Requests in flight at once: several SDK instances sending together.
const HTTP_SENDERS: usize = 8;
/// `Ingest` streams at once, as `benches/service.rs` uses.
const INGEST_STREAMS: u64 = 2;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http()
}

/// The event of sequence number `n`: an order, an open or a product view of
/// person `n % people`.
fn event(n: u64, people: u64) -> (String, &'static str, Vec<(&'static str, Value)>) {
    let person = format!("crm-{}", mix(n) % people);
    let (name, properties) = match n % 10 {
        0 => (
            "Order Completed",
            vec![
                ("order_id", json!(format!("o-{n}"))),
                ("revenue", json!(49.5)),
                ("currency", json!("GBP")),
            ],
        ),
        1..=3 => ("Email Opened", vec![("campaign_id", json!("c-42"))]),
        _ => (
            "Product Viewed",
            vec![
                ("product_id", json!("sku-123")),
                ("category", json!("shoes")),
            ],
        ),
    };
    (person, name, properties)
}

fn at(n: u64) -> String {
    chrono::DateTime::from_timestamp(1_700_000_000 + n as i64, 0)
        .unwrap_or_default()
        .to_rfc3339()
}

fn segment_message(n: u64, people: u64, prefix: &str) -> Value {
    let (user_id, name, properties) = event(n, people);
    json!({
        "type": "track",
        "userId": user_id,
        "event": name,
        "properties": properties.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<serde_json::Map<_, _>>(),
        "messageId": format!("{prefix}-{n}"),
        "timestamp": at(n),
        "context": {"library": {"name": "bench"}},
    })
}

fn ingest_item(n: u64, people: u64, prefix: &str) -> pb::IngestRequest {
    let (user_id, name, properties) = event(n, people);
    let properties = properties
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Number(number_value) => number(number_value.as_f64().unwrap_or(0.0)),
                other => text(other.as_str().unwrap_or_default()),
            };
            (key.to_owned(), value)
        })
        .collect();
    pb::IngestRequest {
        item: Some(Item::Track(pb::TrackRequest {
            identifiers: vec![identifier("user_id", user_id)],
            event: name.to_owned(),
            properties: Some(prost_types::Struct { fields: properties }),
            message_id: format!("{prefix}-{n}"),
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + n as i64,
                nanos: 0,
            }),
            source: "bench".to_owned(),
        })),
    }
}

/// Creates the people, each with a user id and an email, through `Ingest`.
async fn load_people(port: u16, people: u64) {
    let items = (0..people).map(|person| pb::IngestRequest {
        item: Some(Item::Identify(pb::IdentifyRequest {
            identifiers: vec![
                identifier("user_id", format!("crm-{person}")),
                identifier("email", format!("person{person}@example.com")),
            ],
            traits: Some(prost_types::Struct {
                fields: [("first_name".to_owned(), text("Sam"))]
                    .into_iter()
                    .collect(),
            }),
            message_id: format!("person-{person}"),
            timestamp: None,
            source: "bench".to_owned(),
        })),
    });
    let summary = connect(port)
        .await
        .ingest(futures::stream::iter(items.collect::<Vec<_>>()))
        .await
        .expect("ingest people")
        .into_inner();
    assert_eq!(summary.accepted, people, "{:?}", summary.errors.first());
}

/// Events `first..first + events` through `Ingest`; events per second,
/// each acknowledged once durable.
async fn ingest_rate(port: u16, first: u64, events: u64, people: u64) -> f64 {
    let started = Instant::now();
    let mut streams = Vec::new();
    for stream in 0..INGEST_STREAMS {
        let mut client = connect(port).await;
        let items: Vec<_> = (first..first + events)
            .filter(|n| n % INGEST_STREAMS == stream)
            .map(|n| ingest_item(n, people, "grpc"))
            .collect();
        streams.push(tokio::spawn(async move {
            client
                .ingest(futures::stream::iter(items))
                .await
                .expect("ingest")
                .into_inner()
                .accepted
        }));
    }
    let mut accepted = 0;
    for stream in streams {
        accepted += stream.await.expect("stream");
    }
    assert_eq!(accepted, events);
    events as f64 / started.elapsed().as_secs_f64()
}

/// The same number of events through `/v1/batch`, `HTTP_SENDERS` requests
/// in flight; events per second, each batch answered once durable.
async fn http_rate(http_port: u16, first: u64, events: u64, people: u64) -> f64 {
    let batches: Vec<Vec<u8>> = (0..events.div_ceil(BATCH_MESSAGES))
        .map(|batch| {
            let start = first + batch * BATCH_MESSAGES;
            let end = (start + BATCH_MESSAGES).min(first + events);
            let messages: Vec<Value> = (start..end)
                .map(|n| segment_message(n, people, "http"))
                .collect();
            json!({"batch": messages, "sentAt": at(end)})
                .to_string()
                .into_bytes()
        })
        .collect();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(batches));
    let url = format!("http://127.0.0.1:{http_port}/v1/batch");
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..HTTP_SENDERS {
        let queue = std::sync::Arc::clone(&queue);
        let url = url.clone();
        senders.push(tokio::spawn(async move {
            let client = http_client();
            let mut accepted = 0;
            loop {
                let Some(body) = queue.lock().expect("queue").pop() else {
                    return accepted;
                };
                let request = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("request");
                let response = client.request(request).await.expect("batch answered");
                assert_eq!(response.status(), 200);
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                let answer: Value = serde_json::from_slice(&body).expect("JSON answer");
                accepted += answer["accepted"].as_u64().unwrap_or(0);
            }
        }));
    }
    let mut accepted = 0;
    for sender in senders {
        accepted += sender.await.expect("sender");
    }
    assert_eq!(accepted, events);
    events as f64 / started.elapsed().as_secs_f64()
}

/// `GET /v1/profiles/email:…` of a random person, over one keep-alive
/// connection per worker.
#[derive(Clone)]
struct HttpGetProfile {
    client: HttpClient,
    root: String,
    people: u64,
}

impl Caller for HttpGetProfile {
    async fn call(&mut self, sequence: u64) {
        let person = mix(sequence) % self.people;
        let url = format!(
            "{}/v1/profiles/email:person{person}%40example.com",
            self.root
        );
        let request = http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = self
            .client
            .request(request)
            .await
            .expect("profile answered");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.expect("body");
    }
}

fn main() {
    let runs = env_number("BENCH_RUNS", 3).max(1);
    let events = env_number("BENCH_EVENTS", 50_000);
    let people = env_number("BENCH_PROFILES", 10_000);
    let read_seconds = env_number("BENCH_READ_SECONDS", 5);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "sightline HTTP benchmark: {runs} runs, {events} events per API over {people} profiles"
    );
    let (mut grpc_ingest, mut http_ingest) = (vec![], vec![]);
    let (mut grpc_reads, mut http_reads, mut grpc_p99, mut http_p99) =
        (vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        let http_port = free_port();
        let server =
            start_server_with(&["--http-listen".to_owned(), format!("127.0.0.1:{http_port}")]);
        let figures = runtime.block_on(async {
            load_people(server.port, people).await;
            let (grpc, http) = if run % 2 == 1 {
                let grpc = ingest_rate(server.port, 0, events, people).await;
                (grpc, http_rate(http_port, events, events, people).await)
            } else {
                let http = http_rate(http_port, 0, events, people).await;
                (ingest_rate(server.port, events, events, people).await, http)
            };
            let grpc_read = closed_loop(server.port, read_seconds, |channel| {
                GetProfile::new(channel, people)
            })
            .await;
            let root = format!("http://127.0.0.1:{http_port}");
            let callers = (0..CALLS_IN_FLIGHT)
                .map(|_| HttpGetProfile {
                    client: http_client(),
                    root: root.clone(),
                    people,
                })
                .collect();
            let http_read = closed_loop_over(callers, read_seconds).await;
            (grpc, http, grpc_read, http_read)
        });
        let (grpc, http, grpc_read, http_read) = figures;
        println!(
            "run {run}: Ingest {grpc:.0} events/s, /v1/batch {http:.0} events/s ({:.2}); \
             GetProfile {:.0} req/s p99 {:.0} us, GET /v1/profiles {:.0} req/s p99 {:.0} us",
            http / grpc,
            grpc_read.per_second,
            grpc_read.p99_us,
            http_read.per_second,
            http_read.p99_us
        );
        grpc_ingest.push(grpc);
        http_ingest.push(http);
        grpc_reads.push(grpc_read.per_second);
        http_reads.push(http_read.per_second);
        grpc_p99.push(grpc_read.p99_us);
        http_p99.push(http_read.p99_us);
    }
    print_table(&[
        Row::new(
            format!("durable `/v1/batch` ingest, events/s ({BATCH_MESSAGES} per batch, {HTTP_SENDERS} in flight)"),
            &http_ingest,
        )
        .target("≥ 0.70 × `Ingest`", Check::RatioAtLeast(0.70))
        .reference(&grpc_ingest),
        Row::new(
            format!("`GET /v1/profiles` req/s, {CALLS_IN_FLIGHT} in flight"),
            &http_reads,
        )
        .target("beside `GetProfile`", Check::Context)
        .reference(&grpc_reads),
        Row::new("`GET /v1/profiles` p99, µs", &http_p99)
            .target("beside `GetProfile`", Check::Context)
            .reference(&grpc_p99),
    ]);
    println!(
        "median: Ingest {:.0} events/s, /v1/batch {:.0} events/s",
        median(&grpc_ingest),
        median(&http_ingest)
    );
}
