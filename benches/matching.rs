//! Fuzzy matching stays near-linear: the time per identify (with names,
//! birthday and postal code, so every call is matched online) at a small
//! and at a large population. Run with `cargo bench --bench matching`;
//! `BENCH_MATCH_SIZES` (default `10000,1000000`) sets the populations and
//! `BENCH_PROBE` (default 5000) the identifies timed at each size, three
//! times, median reported. `BENCH_SERVER_CONFIG` names a server config file.

mod common;

use std::time::Instant;

use common::{connect, env_number, start_server};
use sightline::api::pb::{self, ingest_request::Item};
use sightline::quality::names::{FIRST_NAMES, LAST_NAMES};

/// splitmix64: a deterministic, dependency-free stream of numbers.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn text(value: String) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(value)),
    }
}

/// One distinct person: random name, birthday and UK-style postal code.
fn person(number: u64) -> pb::IngestRequest {
    let r = mix(number);
    let first = FIRST_NAMES[(r % FIRST_NAMES.len() as u64) as usize];
    let last = LAST_NAMES[((r >> 8) % LAST_NAMES.len() as u64) as usize];
    let year = 1940 + (r >> 16) % 66;
    let month = 1 + (r >> 24) % 12;
    let day = 1 + (r >> 28) % 28;
    let district = (r >> 33) % 99 + 1;
    let sector = (r >> 40) % 10;
    let unit = [(r >> 44) % 26, (r >> 49) % 26].map(|letter| (b'A' + letter as u8) as char);
    let address = prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
            fields: [(
                "postal_code".to_owned(),
                text(format!("B{district} {sector}{}{}", unit[0], unit[1])),
            )]
            .into_iter()
            .collect(),
        })),
    };
    let request = pb::IdentifyRequest {
        identifiers: vec![pb::Identifier {
            kind: "email".to_owned(),
            value: format!("person{number}@example.com"),
        }],
        traits: Some(prost_types::Struct {
            fields: [
                ("first_name".to_owned(), text(first.to_owned())),
                ("last_name".to_owned(), text(last.to_owned())),
                (
                    "birthday".to_owned(),
                    text(format!("{year}-{month:02}-{day:02}")),
                ),
                ("address".to_owned(), address),
            ]
            .into_iter()
            .collect(),
        }),
        message_id: format!("person-{number}"),
        timestamp: None,
        source: "bench".to_owned(),
    };
    pb::IngestRequest {
        item: Some(Item::Identify(request)),
    }
}

/// Loads people `range` over two concurrent streams; returns seconds taken.
async fn load(port: u16, range: std::ops::Range<u64>) -> f64 {
    let started = Instant::now();
    let middle = range.start + (range.end - range.start) / 2;
    let halves = [range.start..middle, middle..range.end];
    let mut streams = Vec::new();
    for half in halves {
        let mut client = connect(port).await;
        streams.push(tokio::spawn(async move {
            let items = half.map(person);
            let summary = client
                .ingest(futures::stream::iter(items))
                .await
                .expect("ingest")
                .into_inner();
            assert_eq!(summary.rejected, 0, "{:?}", summary.errors.first());
        }));
    }
    for stream in streams {
        stream.await.expect("stream");
    }
    started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let sizes: Vec<u64> = std::env::var("BENCH_MATCH_SIZES")
        .unwrap_or_else(|_| "10000,1000000".to_owned())
        .split(',')
        .filter_map(|size| size.trim().parse().ok())
        .collect();
    let probe = env_number("BENCH_PROBE", 5_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = start_server();
    let mut loaded = 0;
    let mut per_identify = Vec::new();
    for &size in &sizes {
        let seconds = runtime.block_on(load(server.port, loaded..size.max(loaded)));
        println!("loaded {} → {size} profiles in {seconds:.1} s", loaded);
        loaded = size.max(loaded);
        let mut runs = Vec::new();
        for _ in 0..3 {
            let seconds = runtime.block_on(load(server.port, loaded..loaded + probe));
            loaded += probe;
            runs.push(seconds * 1e6 / probe as f64);
        }
        let median_us = median(&mut runs);
        println!(
            "at {size} profiles: {median_us:.1} us per matched identify (runs {:.1?})",
            runs
        );
        per_identify.push((size, median_us));
    }
    if let (Some(first), Some(last)) = (per_identify.first(), per_identify.last()) {
        println!(
            "time per identify at {} vs {} profiles: ratio {:.2}",
            last.0,
            first.0,
            last.1 / first.1
        );
    }
}
