//! End-to-end benchmark of the real server binary over gRPC on loopback:
//! durable ingest throughput through `Ingest`, and `GetProfile` latency and
//! throughput at 16 calls in flight. Run with `cargo bench --bench service`.
//!
//! Sizes come from the environment: `BENCH_RUNS` (default 3),
//! `BENCH_EVENTS` (events per ingest run, default 100000), `BENCH_PROFILES`
//! (distinct people, default 10000), `BENCH_READ_SECONDS` (default 5, after 1 s of warm-up).
//! Every figure is reported per run and as the median over runs, for the
//! server as shipped and for the same build storing values unsealed.

mod common;

use std::time::Instant;

use common::calls::GetProfile;
use common::measure::{CALLS_IN_FLIGHT, closed_loop, median};
use common::population::{identifier, number, text};
use common::{connect, env_number, start_server_with};

use sightline::api::pb::{self, ingest_request::Item};

/// Varied names and birthdays, so that fuzzy matching sees a realistic
/// population rather than ten thousand namesakes.
const FIRST_NAMES: &[&str] = &[
    "Alex", "Sam", "Priya", "Tom", "Aisha", "Liam", "Mei", "Omar", "Grace", "Jack", "Sofia",
];
const LAST_NAMES: &[&str] = &[
    "Morgan", "Patel", "Smith", "Nguyen", "Kowalski", "Okafor", "Brown", "Khan", "Evans", "Garcia",
    "Murphy", "Chen", "Taylor",
];
const INGEST_STREAMS: usize = 2;

/// A realistic mix: one identify per person (with traits and two
/// identifiers) followed by their events (page views, opens, orders).
fn ingest_item(sequence: u64, profiles: u64) -> pb::IngestRequest {
    let person = sequence % profiles;
    let first_pass = sequence < profiles;
    let identifiers = vec![identifier("user_id", format!("crm-{person}"))];
    let timestamp = Some(prost_types::Timestamp {
        seconds: 1_700_000_000 + i64::try_from(sequence).unwrap_or(0),
        nanos: 0,
    });
    let item = if first_pass {
        let mut with_email = identifiers;
        with_email.push(identifier("email", format!("person{person}@example.com")));
        Item::Identify(pb::IdentifyRequest {
            identifiers: with_email,
            traits: Some(prost_types::Struct {
                fields: [
                    (
                        "first_name".to_owned(),
                        text(FIRST_NAMES[person as usize % FIRST_NAMES.len()]),
                    ),
                    (
                        "last_name".to_owned(),
                        text(LAST_NAMES[(person / 7) as usize % LAST_NAMES.len()]),
                    ),
                    (
                        "birthday".to_owned(),
                        text(format!(
                            "{}-{:02}-{:02}",
                            1940 + person % 60,
                            1 + (person / 60) % 12,
                            1 + (person / 720) % 28
                        )),
                    ),
                    ("country".to_owned(), text("GB")),
                ]
                .into_iter()
                .collect(),
            }),
            message_id: format!("identify-{sequence}"),
            timestamp,
            source: "bench".to_owned(),
        })
    } else {
        let (event, properties) = match sequence % 10 {
            0 => (
                "Order Completed",
                vec![
                    ("order_id".to_owned(), text(format!("o-{sequence}"))),
                    ("revenue".to_owned(), number(49.5)),
                    ("currency".to_owned(), text("GBP")),
                ],
            ),
            1..=3 => (
                "Email Opened",
                vec![("campaign_id".to_owned(), text("c-42"))],
            ),
            _ => (
                "Product Viewed",
                vec![
                    ("product_id".to_owned(), text("sku-123")),
                    ("category".to_owned(), text("shoes")),
                ],
            ),
        };
        Item::Track(pb::TrackRequest {
            identifiers,
            event: event.to_owned(),
            properties: Some(prost_types::Struct {
                fields: properties.into_iter().collect(),
            }),
            message_id: format!("track-{sequence}"),
            timestamp,
            source: "bench".to_owned(),
        })
    };
    pb::IngestRequest { item: Some(item) }
}

/// Loads `events` items over `INGEST_STREAMS` concurrent streams; returns
/// accepted items per second (each acknowledged only once durable).
async fn ingest_run(port: u16, events: u64, profiles: u64) -> f64 {
    // Identifies first, on one stream, so people exist before their events.
    let mut client = connect(port).await;
    let identifies: Vec<_> = (0..profiles).map(|s| ingest_item(s, profiles)).collect();
    let started = Instant::now();
    let summary = client
        .ingest(futures::stream::iter(identifies))
        .await
        .expect("ingest identifies")
        .into_inner();
    assert_eq!(summary.accepted, profiles, "{:?}", summary.errors.first());
    let mut streams = Vec::new();
    for stream in 0..INGEST_STREAMS as u64 {
        let mut client = connect(port).await;
        let items = (profiles..events)
            .filter(move |s| s % INGEST_STREAMS as u64 == stream)
            .map(move |s| ingest_item(s, profiles));
        streams.push(tokio::spawn(async move {
            client
                .ingest(futures::stream::iter(items))
                .await
                .expect("ingest events")
                .into_inner()
                .accepted
        }));
    }
    let mut accepted = profiles;
    for stream in streams {
        accepted += stream.await.expect("stream task");
    }
    assert_eq!(accepted, events);
    events as f64 / started.elapsed().as_secs_f64()
}

/// One server's figures: ingest rate, then reads at 16 in flight.
struct ModeFigures {
    ingest: f64,
    reads: f64,
    p50_us: f64,
    p99_us: f64,
}

fn measure_mode(
    runtime: &tokio::runtime::Runtime,
    flags: &[String],
    events: u64,
    profiles: u64,
    read_seconds: u64,
) -> ModeFigures {
    let server = start_server_with(flags);
    runtime.block_on(async {
        let ingest = ingest_run(server.port, events, profiles).await;
        let reads = closed_loop(server.port, read_seconds, |channel| {
            GetProfile::new(channel, profiles)
        })
        .await;
        ModeFigures {
            ingest,
            reads: reads.per_second,
            p50_us: reads.p50_us,
            p99_us: reads.p99_us,
        }
    })
}

/// Each run measures the server as shipped (values sealed) and the same
/// build with the benchmark-only switch that stores them unsealed, in
/// alternating order, so that what sealing costs is a ratio measured on
/// the same machine at the same time.
fn main() {
    let runs = env_number("BENCH_RUNS", 3).max(1);
    let events = env_number("BENCH_EVENTS", 100_000);
    let profiles = env_number("BENCH_PROFILES", 10_000).min(events);
    let read_seconds = env_number("BENCH_READ_SECONDS", 5);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    println!("sightline service benchmark: {runs} runs, {events} items over {profiles} profiles");

    let unsealed_flags = ["--unsealed-for-benchmarks".to_owned()];
    let (mut sealed, mut unsealed) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let (first, second): (&[String], &[String]) = match run % 2 {
            1 => (&[], &unsealed_flags),
            _ => (&unsealed_flags, &[]),
        };
        let a = measure_mode(&runtime, first, events, profiles, read_seconds);
        let b = measure_mode(&runtime, second, events, profiles, read_seconds);
        let (with, without) = match run % 2 {
            1 => (a, b),
            _ => (b, a),
        };
        for (name, figures) in [("sealed", &with), ("unsealed", &without)] {
            println!(
                "run {run} {name}: ingest {:.0} items/s durable; GetProfile x{CALLS_IN_FLIGHT} in flight: {:.0} req/s, p50 {} us, p99 {} us",
                figures.ingest, figures.reads, figures.p50_us, figures.p99_us
            );
        }
        sealed.push(with);
        unsealed.push(without);
    }
    for (name, figures) in [("sealed", &sealed), ("unsealed", &unsealed)] {
        let pick = |f: fn(&ModeFigures) -> f64| median(&figures.iter().map(f).collect::<Vec<_>>());
        println!(
            "median {name}: ingest {:.0} items/s; GetProfile {:.0} req/s, p50 {:.0} us, p99 {:.0} us",
            pick(|f| f.ingest),
            pick(|f| f.reads),
            pick(|f| f.p50_us),
            pick(|f| f.p99_us)
        );
    }
    let ratio = |f: fn(&ModeFigures) -> f64| {
        let ratios: Vec<f64> = sealed
            .iter()
            .zip(&unsealed)
            .map(|(with, without)| f(with) / f(without))
            .collect();
        median(&ratios)
    };
    println!(
        "sealed / unsealed (median of per-run ratios; target >= 0.85): ingest {:.3}, GetProfile x{CALLS_IN_FLIGHT} {:.3}",
        ratio(|f| f.ingest),
        ratio(|f| f.reads)
    );
}
