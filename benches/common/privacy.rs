//! Subject export and erasure of people with many events (design 9:
//! p99 <= 20 ms each at 1,000 events), on a populated store: a population
//! of matched profiles with near-twins, so that the match-candidate and
//! rejection tables are not empty. Requests go one at a time: the latency
//! of one request, not of a queue.

use std::time::Instant;

use hdrhistogram::Histogram;
use sightline::api::pb::{
    self, admin_service_client::AdminServiceClient, erase_subject_request, export_subject_request,
    privacy_service_client::PrivacyServiceClient,
};
use tonic::transport::Channel;

use super::population::{self, identifier, matched_traits, object};
use super::{channel, connect, start_server};
use sightline::quality::names::FIRST_NAMES;

/// Every `TWIN_EVERY`th person of the population has a near-twin: the same
/// last name and birthday, a first name one letter off, another postcode
/// and an email of its own, which fuzzy matching proposes for review (or
/// merges).
const TWIN_EVERY: u64 = 10;
/// People of the population sit far from the measured ones' numbers.
const POPULATION_BASE: u64 = 1 << 40;

fn twin_of(person: u64) -> pb::IngestRequest {
    let mut traits = matched_traits(person);
    let elsewhere = matched_traits(person ^ 0x5555);
    for (name, value) in &mut traits {
        if *name == "first_name" {
            let first = population::pick(FIRST_NAMES, population::mix(person));
            *value = population::text(format!("{first}x"));
        }
        if *name == "address" {
            if let Some((_, moved)) = elsewhere.iter().find(|(other, _)| *other == "address") {
                *value = moved.clone();
            }
        }
    }
    pb::IngestRequest {
        item: Some(pb::ingest_request::Item::Identify(pb::IdentifyRequest {
            identifiers: vec![identifier("email", format!("twin{person}@example.net"))],
            traits: Some(object(traits)),
            message_id: format!("twin-{person}"),
            ..Default::default()
        })),
    }
}

/// Loads `people` matched profiles and their twins; then rejects every
/// other pending candidate, so that both tables hold thousands of pairs.
/// Returns (candidates pending, rejections made).
pub async fn populate(port: u16, people: u64) -> (u64, u64) {
    population::ingest(port, people, |offset| {
        let person = POPULATION_BASE + offset;
        let mut items = vec![population::matched_identify(person)];
        if offset % TWIN_EVERY == 0 {
            items.push(twin_of(person));
        }
        items
    })
    .await;
    // The model is estimated as the population grows; one estimate on
    // demand waits for that work, so that the timed requests meet a server
    // at rest rather than one still training on the load.
    AdminServiceClient::new(channel(port).await)
        .estimate_match_model(pb::EstimateMatchModelRequest {})
        .await
        .expect("estimate the match model");
    let mut client = connect(port).await;
    let mut candidates = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_match_candidates(pb::ListMatchCandidatesRequest {
                page_size: 1000,
                page_token,
            })
            .await
            .expect("list candidates")
            .into_inner();
        candidates.extend(page.candidates.into_iter().map(|c| c.candidate_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut rejected = 0;
    for candidate_id in candidates.iter().step_by(2) {
        client
            .review_match_candidate(pb::ReviewMatchCandidateRequest {
                candidate_id: candidate_id.clone(),
                decision: pb::ReviewDecision::Reject as i32,
                reviewer: "bench".to_owned(),
                ..Default::default()
            })
            .await
            .expect("reject");
        rejected += 1;
    }
    (candidates.len() as u64 - rejected, rejected)
}

pub fn who(person: u64) -> pb::Identifier {
    pb::Identifier {
        kind: "email".to_owned(),
        value: format!("person{person}@example.com"),
    }
}

pub fn field(value: prost_types::value::Kind) -> prost_types::Value {
    prost_types::Value { kind: Some(value) }
}

pub async fn load(port: u16, people: u64, events: u64) {
    let mut client = connect(port).await;
    for person in 0..people {
        let mut items = Vec::with_capacity(events as usize + 1);
        items.push(pb::IngestRequest {
            item: Some(pb::ingest_request::Item::Identify(pb::IdentifyRequest {
                identifiers: vec![
                    who(person),
                    pb::Identifier {
                        kind: "phone".to_owned(),
                        value: format!("+4479111{person:05}"),
                    },
                    pb::Identifier {
                        kind: "device_id".to_owned(),
                        value: format!("device-{person}"),
                    },
                ],
                traits: Some(prost_types::Struct {
                    fields: [
                        ("first_name", "Alex"),
                        ("last_name", "Morgan"),
                        ("city", "Leeds"),
                        ("plan", "gold"),
                    ]
                    .into_iter()
                    .map(|(name, value)| {
                        (
                            name.to_owned(),
                            field(prost_types::value::Kind::StringValue(value.to_owned())),
                        )
                    })
                    .collect(),
                }),
                ..Default::default()
            })),
        });
        for n in 0..events {
            let (name, properties) = if n % 10 == 0 {
                (
                    "Order Completed",
                    [
                        (
                            "revenue".to_owned(),
                            field(prost_types::value::Kind::NumberValue(40.0 + n as f64)),
                        ),
                        (
                            "order_id".to_owned(),
                            field(prost_types::value::Kind::StringValue(format!(
                                "o-{person}-{n}"
                            ))),
                        ),
                    ]
                    .into_iter()
                    .collect(),
                )
            } else {
                (
                    "Product Viewed",
                    [(
                        "category".to_owned(),
                        field(prost_types::value::Kind::StringValue("shoes".to_owned())),
                    )]
                    .into_iter()
                    .collect(),
                )
            };
            items.push(pb::IngestRequest {
                item: Some(pb::ingest_request::Item::Track(pb::TrackRequest {
                    identifiers: vec![who(person)],
                    event: name.to_owned(),
                    properties: Some(prost_types::Struct { fields: properties }),
                    ..Default::default()
                })),
            });
        }
        let summary = client
            .ingest(futures::stream::iter(items))
            .await
            .expect("ingest")
            .into_inner();
        assert_eq!(summary.rejected, 0, "{:?}", summary.errors.first());
    }
}

pub async fn privacy_client(port: u16) -> PrivacyServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    PrivacyServiceClient::new(channel)
}

pub struct RunFigures {
    pub candidates: u64,
    pub rejections: u64,
    pub export_p50_ms: f64,
    pub export_p99_ms: f64,
    pub export_bytes: usize,
    pub erase_p50_ms: f64,
    pub erase_p99_ms: f64,
    /// The slowest exports as (request number from 0, ms), slowest first:
    /// whether a tail is one cold request or spread over the run.
    pub slowest_exports: Vec<(u64, f64)>,
}

pub async fn run(population: u64, people: u64, events: u64) -> RunFigures {
    let server = start_server();
    drop(connect(server.port).await);
    let (candidates, rejections) = populate(server.port, population).await;
    load(server.port, people, events).await;
    let mut privacy = privacy_client(server.port).await;
    let mut exports = Histogram::<u64>::new(3).expect("histogram");
    let mut erasures = Histogram::<u64>::new(3).expect("histogram");
    let mut export_bytes = 0;
    let mut export_times = Vec::new();
    for person in 0..people {
        let started = Instant::now();
        let mut stream = privacy
            .export_subject(pb::ExportSubjectRequest {
                lookup: Some(export_subject_request::Lookup::Identifier(who(person))),
                requester: "bench".to_owned(),
                ..Default::default()
            })
            .await
            .expect("export")
            .into_inner();
        let mut bytes = 0;
        while let Some(chunk) = stream.message().await.expect("chunk") {
            bytes += chunk.data.len();
        }
        let micros = started.elapsed().as_micros() as u64;
        exports.record(micros).expect("record");
        export_times.push((person, micros as f64 / 1000.0));
        export_bytes = export_bytes.max(bytes);
    }
    for person in 0..people {
        let started = Instant::now();
        let response = privacy
            .erase_subject(pb::EraseSubjectRequest {
                lookup: Some(erase_subject_request::Lookup::Identifier(who(person))),
                requester: "bench".to_owned(),
                reason: "benchmark".to_owned(),
                ..Default::default()
            })
            .await
            .expect("erase")
            .into_inner();
        erasures
            .record(started.elapsed().as_micros() as u64)
            .expect("record");
        assert!(response.erased);
        assert_eq!(
            response.counts.map(|counts| counts.events),
            Some(events),
            "every event erased"
        );
    }
    let ms = |histogram: &Histogram<u64>, quantile: f64| {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    };
    export_times.sort_by(|a, b| b.1.total_cmp(&a.1));
    export_times.truncate(3);
    RunFigures {
        slowest_exports: export_times,
        candidates,
        rejections,
        export_p50_ms: ms(&exports, 0.5),
        export_p99_ms: ms(&exports, 0.99),
        export_bytes,
        erase_p50_ms: ms(&erasures, 0.5),
        erase_p99_ms: ms(&erasures, 0.99),
    }
}
