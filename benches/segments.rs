//! Segments end to end, against the real server binary over gRPC on
//! loopback (design 9):
//!
//! 1. full evaluation of one new segment over a loaded population (time
//!    from `PutSegment` until `GetSegment` reports it ready), for a rule on
//!    computed and plain traits and for a distance rule; then the server's
//!    peak memory with the population and 20 segments defined, and its data
//!    directory per profile;
//! 2. `CheckMembership` by email at 16 calls in flight, beside a trivial
//!    gRPC service at the same concurrency in the same run;
//! 3. durable ingest through `Ingest` with 20 segments defined and with
//!    none;
//! 4. disk per profile for the design's shape: 5 identifiers, 10 traits and
//!    20 events each.
//!
//! Run with `cargo bench --bench segments`. Sizes come from the
//! environment: `BENCH_RUNS` (default 3), `BENCH_SEGMENT_PROFILES` (the
//! population of parts 1 and 2, default 1000000), `BENCH_READ_SECONDS`
//! (measured seconds per read run, default 5, after 1 s of warm-up),
//! `BENCH_INGEST_PROFILES` (people per ingest run of part 3, default
//! 100000), `BENCH_DISK_PROFILES` (people of part 4, default 100000; 0
//! skips it). Figures are printed per run, then as a table of medians.
//!
//! The reference service is `grpc.health.v1.Health/Check` from
//! `tonic-health`, served by this same benchmark binary started again as a
//! separate process (`BENCH_ECHO_PORT` set), so that it costs what an echo
//! costs between two processes: a tiny request, a tiny response, nothing
//! else. The same call against the Sightline server is reported too; it
//! shows what that server's layers cost before any work is done.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, channel, connect, env_number, start_server};

use hdrhistogram::Histogram;
use sightline::api::pb::{
    self, check_membership_request, ingest_request::Item,
    segment_service_client::SegmentServiceClient,
};
use sightline::quality::names::{FIRST_NAMES, LAST_NAMES};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CALLS_IN_FLIGHT: usize = 16;
const INGEST_STREAMS: u64 = 4;
const WARM_UP: Duration = Duration::from_secs(1);
const DAY_SECONDS: i64 = 86_400;
/// Set in the environment of the reference process: the port to serve on.
const ECHO_PORT_VARIABLE: &str = "BENCH_ECHO_PORT";

/// The two rules whose full evaluation is timed.
const ACTIVE_GOLD: (&str, &str) = (
    "active-gold",
    r#"profile.computed.lifecycle_stage == "active" && profile.traits.plan == "gold""#,
);
const NEAR_LONDON: (&str, &str) = (
    "near-london",
    "geo_distance_km(profile.traits.location.lat, profile.traits.location.lon, 51.5072, -0.1276) < 25.0",
);

/// Eighteen more, so that 20 are defined: trait comparisons, consent,
/// computed traits, distances and one event window, as a real installation
/// would mix them.
const OTHER_SEGMENTS: [(&str, &str); 18] = [
    ("gold", r#"profile.traits.plan == "gold""#),
    (
        "silver-over-30",
        r#"profile.traits.plan == "silver" && profile.traits.age >= 30"#,
    ),
    ("under-25", "profile.traits.age < 25"),
    ("londoners", r#"profile.traits.city == "London""#),
    (
        "continental",
        r#"profile.traits.city in ["Paris", "Berlin", "Madrid", "Lisbon"]"#,
    ),
    ("email-marketing", r#""email" in profile.consent.marketing"#),
    (
        "sms-or-push",
        r#""sms" in profile.consent.marketing || "push" in profile.consent.marketing"#,
    ),
    (
        "lapsing",
        r#"profile.computed.lifecycle_stage == "lapsing""#,
    ),
    ("big-spenders", "profile.computed.monetary >= 300.0"),
    (
        "paying-repeat",
        r#"profile.computed.frequency >= 2 && profile.traits.plan != "free""#,
    ),
    (
        "first-time",
        r#"profile.computed.lifecycle_stage == "first_time""#,
    ),
    (
        "disengaged",
        r#"profile.computed.engagement_group == "disengaged" && profile.traits.age >= 40"#,
    ),
    (
        "recent-browsers",
        r#"events_in("Product Viewed", duration("30d")) >= 1"#,
    ),
    (
        "inactive-seniors",
        r#"profile.computed.lifecycle_stage == "inactive" && profile.traits.age >= 60"#,
    ),
    (
        "near-paris",
        "geo_distance_km(profile.traits.location.lat, profile.traits.location.lon, 48.8566, 2.3522) < 50.0",
    ),
    (
        "high-value-gold",
        r#"profile.computed.lifetime_value > 100.0 && profile.traits.plan == "gold""#,
    ),
    (
        "leads",
        r#"profile.computed.lifecycle_stage == "lead" && profile.traits.plan == "free""#,
    ),
    (
        "silver-converters",
        r#"profile.computed.conversions_90d >= 1 && profile.traits.plan == "silver""#,
    ),
];

/// Cities with their centres; people live up to ~40 km around them.
const CITIES: [(&str, f64, f64); 10] = [
    ("London", 51.5072, -0.1276),
    ("Manchester", 53.4808, -2.2426),
    ("Birmingham", 52.4862, -1.8904),
    ("Leeds", 53.8008, -1.5491),
    ("Glasgow", 55.8642, -4.2518),
    ("Paris", 48.8566, 2.3522),
    ("Berlin", 52.5200, 13.4050),
    ("Madrid", 40.4168, -3.7038),
    ("Lisbon", 38.7223, -9.1393),
    ("Dublin", 53.3498, -6.2603),
];
const PLANS: [&str; 5] = ["free", "free", "silver", "silver", "gold"];

/// splitmix64: a deterministic, dependency-free stream of numbers.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pick<T: Copy>(choices: &[T], random: u64) -> T {
    choices[(random % choices.len() as u64) as usize]
}

fn text(value: impl Into<String>) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(value.into())),
    }
}

fn number(value: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(value)),
    }
}

fn flag(value: bool) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::BoolValue(value)),
    }
}

fn object(fields: Vec<(&str, prost_types::Value)>) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    }
}

fn identifier(kind: &str, value: String) -> pb::Identifier {
    pb::Identifier {
        kind: kind.to_owned(),
        value,
    }
}

fn email_of(person: u64) -> pb::Identifier {
    identifier("email", format!("person{person}@example.com"))
}

fn seconds_ago(now_seconds: i64, seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: now_seconds - seconds,
        nanos: 0,
    })
}

fn unix_seconds_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The traits every generated person has: plan, city, age and a location
/// near the city's centre.
fn common_traits(person: u64) -> Vec<(&'static str, prost_types::Value)> {
    let random = mix(person);
    let (city, lat, lon) = pick(&CITIES, random);
    // Up to ±0.35° of latitude and ±0.5° of longitude: 0–40 km out.
    let offset = |bits: u64| ((bits % 2001) as f64 / 1000.0) - 1.0;
    let location = object(vec![
        ("lat", number(lat + 0.35 * offset(random >> 8))),
        ("lon", number(lon + 0.5 * offset(random >> 20))),
    ]);
    vec![
        ("plan", text(pick(&PLANS, random >> 32))),
        ("city", text(city)),
        ("age", number((18 + (random >> 40) % 63) as f64)),
        (
            "location",
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(location)),
            },
        ),
    ]
}

/// Part 1's people: one email and the common traits.
fn simple_identify(person: u64) -> pb::IngestRequest {
    pb::IngestRequest {
        item: Some(Item::Identify(pb::IdentifyRequest {
            identifiers: vec![email_of(person)],
            traits: Some(object(common_traits(person))),
            message_id: format!("identify-{person}"),
            timestamp: None,
            source: "bench".to_owned(),
        })),
    }
}

fn track(
    who: pb::Identifier,
    event: &str,
    properties: Vec<(&str, prost_types::Value)>,
    message_id: String,
    timestamp: Option<prost_types::Timestamp>,
) -> pb::IngestRequest {
    pb::IngestRequest {
        item: Some(Item::Track(pb::TrackRequest {
            identifiers: vec![who],
            event: event.to_owned(),
            properties: Some(object(properties)),
            message_id,
            timestamp,
            source: "bench".to_owned(),
        })),
    }
}

/// A quarter of part 1's people have events: one or two orders within the
/// last year (so lifecycle stages and monetary values vary) and a product
/// view within the last two months.
fn simple_events(person: u64, now_seconds: i64) -> Vec<pb::IngestRequest> {
    let random = mix(person ^ 0x5eed);
    if random % 4 != 0 {
        return Vec::new();
    }
    let orders = 1 + (random >> 2) % 2;
    let mut items: Vec<_> = (0..orders)
        .map(|order| {
            let bits = random >> (8 + 12 * order);
            track(
                email_of(person),
                "Order Completed",
                vec![
                    ("order_id", text(format!("o-{person}-{order}"))),
                    ("revenue", number(10.0 + (bits % 49_000) as f64 / 100.0)),
                    ("currency", text("GBP")),
                ],
                format!("order-{person}-{order}"),
                seconds_ago(now_seconds, (bits % 365) as i64 * DAY_SECONDS + 60),
            )
        })
        .collect();
    items.push(track(
        email_of(person),
        "Product Viewed",
        vec![
            ("product_id", text(format!("sku-{}", random % 500))),
            (
                "category",
                text(pick(&["shoes", "books", "garden"], random)),
            ),
        ],
        format!("view-{person}"),
        seconds_ago(now_seconds, ((random >> 40) % 60) as i64 * DAY_SECONDS + 60),
    ));
    items
}

/// Part 4's shape: 5 identifiers and 10 traits.
fn full_identify(person: u64) -> pb::IngestRequest {
    let random = mix(person ^ 0xd15c);
    let mut traits = common_traits(person);
    traits.extend([
        ("first_name", text(pick(FIRST_NAMES, random))),
        ("last_name", text(pick(LAST_NAMES, random >> 16))),
        (
            "language",
            text(pick(&["en", "fr", "de", "es"], random >> 32)),
        ),
        ("newsletter", flag((random >> 36) % 2 == 0)),
        (
            "signup_source",
            text(pick(&["web", "ios", "android", "store"], random >> 40)),
        ),
        (
            "company",
            text(format!("Company {}", (random >> 44) % 5000)),
        ),
    ]);
    pb::IngestRequest {
        item: Some(Item::Identify(pb::IdentifyRequest {
            identifiers: vec![
                identifier("user_id", format!("u-{person}")),
                email_of(person),
                identifier("phone", format!("+44791{:07}", person % 10_000_000)),
                identifier("device_id", format!("{:016x}-{person}", random)),
                identifier("anonymous_id", format!("anon-{person}")),
            ],
            traits: Some(object(traits)),
            message_id: format!("identify-{person}"),
            timestamp: None,
            source: "bench".to_owned(),
        })),
    }
}

/// Part 4's 20 events per person over the last half year.
fn full_events(person: u64, now_seconds: i64) -> impl Iterator<Item = pb::IngestRequest> {
    (0..20u64).map(move |index| {
        let random = mix(person.wrapping_mul(31) + index);
        let when = seconds_ago(now_seconds, (random % (180 * DAY_SECONDS as u64)) as i64);
        let who = identifier("user_id", format!("u-{person}"));
        let message_id = format!("event-{person}-{index}");
        match index % 10 {
            0 => track(
                who,
                "Order Completed",
                vec![
                    ("order_id", text(format!("o-{person}-{index}"))),
                    ("revenue", number((random >> 20) as f64 % 300.0)),
                    ("currency", text("GBP")),
                ],
                message_id,
                when,
            ),
            1..=3 => track(
                who,
                "Email Opened",
                vec![("campaign_id", text(format!("c-{}", random % 40)))],
                message_id,
                when,
            ),
            4 => track(
                who,
                "Email Clicked",
                vec![("campaign_id", text(format!("c-{}", random % 40)))],
                message_id,
                when,
            ),
            _ => track(
                who,
                "Product Viewed",
                vec![
                    ("product_id", text(format!("sku-{}", random % 500))),
                    (
                        "category",
                        text(pick(&["shoes", "books", "garden"], random)),
                    ),
                ],
                message_id,
                when,
            ),
        }
    })
}

/// Sends items over `INGEST_STREAMS` concurrent `Ingest` streams, each
/// person's items on the stream `person % INGEST_STREAMS`; returns the
/// number accepted (each acknowledged only once durable).
async fn ingest<I, F>(port: u16, people: u64, items_of: F) -> u64
where
    F: Fn(u64) -> I + Copy + Send + 'static,
    I: IntoIterator<Item = pb::IngestRequest> + 'static,
    I::IntoIter: Send + 'static,
{
    let mut streams = Vec::new();
    for stream in 0..INGEST_STREAMS {
        let mut client = connect(port).await;
        let items = futures::stream::iter(
            (stream..people)
                .step_by(INGEST_STREAMS as usize)
                .flat_map(items_of),
        );
        streams.push(tokio::spawn(async move {
            let summary = client.ingest(items).await.expect("ingest").into_inner();
            assert_eq!(summary.rejected, 0, "{:?}", summary.errors.first());
            summary.accepted
        }));
    }
    let mut accepted = 0;
    for stream in streams {
        accepted += stream.await.expect("ingest stream");
    }
    accepted
}

/// Identifies first, so that people exist before their events arrive.
/// Returns items per second over both phases.
async fn load_simple(port: u16, people: u64, now_seconds: i64) -> f64 {
    let started = Instant::now();
    let mut accepted = ingest(port, people, |person| [simple_identify(person)]).await;
    accepted += ingest(port, people, move |person| {
        simple_events(person, now_seconds)
    })
    .await;
    accepted as f64 / started.elapsed().as_secs_f64()
}

type Segments = SegmentServiceClient<Channel>;

fn segment_request(id: &str, rule: &str) -> pb::PutSegmentRequest {
    pb::PutSegmentRequest {
        segment: Some(pb::Segment {
            id: id.to_owned(),
            name: id.to_owned(),
            rule: rule.to_owned(),
            ..Default::default()
        }),
    }
}

async fn segment_state(segments: &mut Segments, id: &str) -> pb::Segment {
    segments
        .get_segment(pb::GetSegmentRequest { id: id.to_owned() })
        .await
        .expect("get segment")
        .into_inner()
        .segment
        .expect("segment")
}

/// Defines a segment and waits until its members are computed; returns
/// the time that took and the member count.
async fn define(segments: &mut Segments, id: &str, rule: &str) -> (Duration, u64) {
    let started = Instant::now();
    segments
        .put_segment(segment_request(id, rule))
        .await
        .unwrap_or_else(|status| panic!("put segment {id}: {status}"));
    loop {
        let state = segment_state(segments, id).await;
        if state.ready {
            return (started.elapsed(), state.member_count);
        }
        // Polling costs the server little next to the backfill it waits
        // for, and 10 ms is below the precision that matters here.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Peak and current resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn directory_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .expect("read data dir")
        .map(|entry| {
            let entry = entry.expect("dir entry");
            let metadata = entry.metadata().expect("metadata");
            if metadata.is_dir() {
                directory_bytes(&entry.path())
            } else {
                // Allocated blocks, not the apparent length: sled's files
                // may be sparse.
                std::os::unix::fs::MetadataExt::blocks(&metadata) * 512
            }
        })
        .sum()
}

#[derive(Clone, Copy)]
enum Probe {
    /// `grpc.health.v1.Health/Check`.
    Health,
    /// `CheckMembership` by the email of a random person of `people`.
    CheckMembership { people: u64 },
}

struct LoopFigures {
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

/// A closed loop of `CALLS_IN_FLIGHT` workers, one connection each, as
/// independent callers would be; latencies recorded after a warm-up.
async fn closed_loop(port: u16, probe: Probe, seconds: u64) -> LoopFigures {
    let warm_until = Instant::now() + WARM_UP;
    let measure_until = warm_until + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for worker in 0..CALLS_IN_FLIGHT as u64 {
        let channel = channel(port).await;
        workers.push(tokio::spawn(async move {
            let mut health = HealthClient::new(channel.clone());
            let mut segments = SegmentServiceClient::new(channel);
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let mut random = mix(worker);
            loop {
                let started = Instant::now();
                if started >= measure_until {
                    break;
                }
                match probe {
                    Probe::Health => {
                        health
                            .check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                            .expect("health check");
                    }
                    Probe::CheckMembership { people } => {
                        random = mix(random);
                        segments
                            .check_membership(pb::CheckMembershipRequest {
                                lookup: Some(check_membership_request::Lookup::Identifier(
                                    email_of(random % people),
                                )),
                            })
                            .await
                            .expect("check membership");
                    }
                }
                if started >= warm_until {
                    histogram
                        .record(started.elapsed().as_micros() as u64)
                        .expect("record");
                }
            }
            histogram
        }));
    }
    let mut total = Histogram::<u64>::new(3).expect("histogram");
    for worker in workers {
        total.add(worker.await.expect("worker")).expect("merge");
    }
    LoopFigures {
        per_second: total.len() as f64 / seconds as f64,
        p50_us: total.value_at_quantile(0.50),
        p99_us: total.value_at_quantile(0.99),
    }
}

/// The reference service in its own process: this binary again, serving
/// only `tonic-health`.
struct EchoProcess {
    child: Child,
    port: u16,
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_echo() -> EchoProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port");
    let child = Command::new(std::env::current_exe().expect("own path"))
        .env(ECHO_PORT_VARIABLE, port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start echo process");
    EchoProcess { child, port }
}

fn serve_echo(port: u16) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (_reporter, health) = tonic_health::server::health_reporter();
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health)
            .serve(([127, 0, 0, 1], port).into())
            .await
            .expect("serve echo");
    });
}

/// Median, minimum and maximum.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(values: &[f64]) -> Spread {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Spread {
        median: sorted[sorted.len() / 2],
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    }
}

struct Row {
    metric: String,
    value: Spread,
    reference: Option<f64>,
    higher_is_better: bool,
    target: &'static str,
}

fn row(metric: impl Into<String>, values: &[f64], target: &'static str) -> Row {
    Row {
        metric: metric.into(),
        value: spread(values),
        reference: None,
        higher_is_better: true,
        target,
    }
}

fn figure(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| metric | median | min–max | reference | ratio | target |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let (reference, ratio) = match row.reference {
            Some(reference) => {
                let ratio = if row.higher_is_better {
                    row.value.median / reference
                } else {
                    reference / row.value.median
                };
                (figure(reference), format!("{ratio:.2}"))
            }
            None => ("".to_owned(), "".to_owned()),
        };
        println!(
            "| {} | {} | {}–{} | {} | {} | {} |",
            row.metric,
            figure(row.value.median),
            figure(row.value.min),
            figure(row.value.max),
            reference,
            ratio,
            row.target
        );
    }
}

/// Parts 1 and 2 on one server: load, time full evaluations, read memory
/// and disk, then measure `CheckMembership` beside the reference.
async fn evaluation_and_reads(
    server: &Server,
    runs: u64,
    people: u64,
    read_seconds: u64,
    rows: &mut Vec<Row>,
) {
    let mut segments = SegmentServiceClient::new(channel(server.port).await);
    for (id, rule) in OTHER_SEGMENTS {
        define(&mut segments, id, rule).await;
    }
    let now_seconds = unix_seconds_now();
    let load_rate = load_simple(server.port, people, now_seconds).await;
    println!(
        "loaded {people} people (a quarter with events) with {} segments defined: {load_rate:.0} items/s",
        OTHER_SEGMENTS.len()
    );

    let (mut active_gold, mut near_london) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        for ((id, rule), seconds) in [
            (ACTIVE_GOLD, &mut active_gold),
            (NEAR_LONDON, &mut near_london),
        ] {
            if run > 1 {
                // A fresh definition each run, not a no-op redefinition.
                segments
                    .delete_segment(pb::DeleteSegmentRequest { id: id.to_owned() })
                    .await
                    .expect("delete segment");
            }
            let (elapsed, members) = define(&mut segments, id, rule).await;
            println!(
                "run {run}: {id} evaluated over {people} profiles in {:.2} s ({:.0} profiles/s), {members} members",
                elapsed.as_secs_f64(),
                people as f64 / elapsed.as_secs_f64()
            );
            seconds.push(elapsed.as_secs_f64());
        }
    }
    let per_million = 1_000_000.0 / people as f64;
    for (id, seconds) in [(ACTIVE_GOLD.0, &active_gold), (NEAR_LONDON.0, &near_london)] {
        let normalised: Vec<f64> = seconds.iter().map(|s| s * per_million).collect();
        let mut seconds_row = row(
            format!("full evaluation `{id}`, s per 1M profiles"),
            &normalised,
            "≤ 1 s",
        );
        seconds_row.higher_is_better = false;
        rows.push(seconds_row);
        let rates: Vec<f64> = seconds.iter().map(|s| people as f64 / s).collect();
        rows.push(row(
            format!("full evaluation `{id}`, profiles/s"),
            &rates,
            "≥ 1,000,000",
        ));
    }

    let (peak_kib, resident_kib) = memory_kib(server.pid());
    let gib = |kib: u64| kib as f64 / (1024.0 * 1024.0);
    println!(
        "server memory with {people} profiles and 20 segments: peak {:.2} GiB, now {:.2} GiB",
        gib(peak_kib),
        gib(resident_kib)
    );
    rows.push(row(
        format!("server peak RSS (VmHWM), {people} profiles, 20 segments, GiB"),
        &[gib(peak_kib)],
        "≤ 2 GiB",
    ));
    let disk_bytes = directory_bytes(server.data_dir());
    println!(
        "data dir: {:.1} MiB, {:.0} bytes per profile",
        disk_bytes as f64 / (1024.0 * 1024.0),
        disk_bytes as f64 / people as f64
    );
    rows.push(row(
        format!("disk per profile, part 1 population ({people}), bytes"),
        &[disk_bytes as f64 / people as f64],
        "(for reference)",
    ));

    let echo = start_echo();
    let (mut echo_rates, mut echo_p50, mut echo_p99) = (vec![], vec![], vec![]);
    let (mut check_rates, mut check_p50, mut check_p99) = (vec![], vec![], vec![]);
    let mut health_rates = vec![];
    for run in 1..=runs {
        let reference = closed_loop(echo.port, Probe::Health, read_seconds).await;
        let check = closed_loop(server.port, Probe::CheckMembership { people }, read_seconds).await;
        let health = closed_loop(server.port, Probe::Health, read_seconds).await;
        println!(
            "run {run}: x{CALLS_IN_FLIGHT} in flight: CheckMembership {:.0} req/s p50 {} us p99 {} us; echo {:.0} req/s p50 {} us p99 {} us; Health/Check on sightline {:.0} req/s",
            check.per_second,
            check.p50_us,
            check.p99_us,
            reference.per_second,
            reference.p50_us,
            reference.p99_us,
            health.per_second
        );
        echo_rates.push(reference.per_second);
        echo_p50.push(reference.p50_us as f64);
        echo_p99.push(reference.p99_us as f64);
        check_rates.push(check.per_second);
        check_p50.push(check.p50_us as f64);
        check_p99.push(check.p99_us as f64);
        health_rates.push(health.per_second);
    }
    let mut rate_row = row(
        "`CheckMembership` by email, 16 in flight, req/s (ref: echo)",
        &check_rates,
        "≥ 0.60 of echo",
    );
    rate_row.reference = Some(spread(&echo_rates).median);
    rows.push(rate_row);
    let mut p50_row = row("`CheckMembership` p50, µs (ref: echo)", &check_p50, "");
    p50_row.reference = Some(spread(&echo_p50).median);
    p50_row.higher_is_better = false;
    rows.push(p50_row);
    let mut p99_row = row("`CheckMembership` p99, µs (ref: echo)", &check_p99, "");
    p99_row.reference = Some(spread(&echo_p99).median);
    p99_row.higher_is_better = false;
    rows.push(p99_row);
    let mut health_row = row(
        "`Health/Check` on the Sightline server, req/s (ref: echo)",
        &health_rates,
        "",
    );
    health_row.reference = Some(spread(&echo_rates).median);
    rows.push(health_row);
}

/// Part 3: a fresh server per run, alternating no segments and 20.
async fn ingest_comparison(runs: u64, people: u64, rows: &mut Vec<Row>) {
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        for defined in [0, 20] {
            let server = start_server();
            let mut segments = SegmentServiceClient::new(channel(server.port).await);
            if defined > 0 {
                for (id, rule) in [ACTIVE_GOLD, NEAR_LONDON].into_iter().chain(OTHER_SEGMENTS) {
                    define(&mut segments, id, rule).await;
                }
            }
            let rate = load_simple(server.port, people, unix_seconds_now()).await;
            println!(
                "run {run}: ingest of {people} people with {defined} segments: {rate:.0} items/s durable"
            );
            if defined > 0 {
                with.push(rate);
            } else {
                without.push(rate);
            }
        }
    }
    let mut with_row = row(
        "durable ingest, 20 segments, items/s (ref: no segments)",
        &with,
        "≥ 40% of raw sled (≈ 35–45k)",
    );
    with_row.reference = Some(spread(&without).median);
    rows.push(with_row);
}

/// Part 4: the design's per-profile shape, no segments.
async fn disk_per_profile(people: u64, rows: &mut Vec<Row>) {
    let server = start_server();
    let now_seconds = unix_seconds_now();
    let started = Instant::now();
    let mut accepted = ingest(server.port, people, |person| [full_identify(person)]).await;
    accepted += ingest(server.port, people, move |person| {
        full_events(person, now_seconds)
    })
    .await;
    let bytes = directory_bytes(server.data_dir());
    println!(
        "disk shape: {people} people x (5 identifiers, 10 traits, 20 events), {accepted} items in {:.0} s; data dir {:.1} MiB, {:.0} bytes per profile",
        started.elapsed().as_secs_f64(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / people as f64
    );
    rows.push(row(
        format!("disk per profile, 5 ids + 10 traits + 20 events ({people} people), bytes"),
        &[bytes as f64 / people as f64],
        "≤ 3072",
    ));
}

fn main() {
    if let Ok(port) = std::env::var(ECHO_PORT_VARIABLE) {
        serve_echo(port.parse().expect("echo port"));
        return;
    }
    let runs = env_number("BENCH_RUNS", 3).max(1);
    let people = env_number("BENCH_SEGMENT_PROFILES", 1_000_000).max(1);
    let read_seconds = env_number("BENCH_READ_SECONDS", 5).max(1);
    let ingest_people = env_number("BENCH_INGEST_PROFILES", 100_000).max(1);
    let disk_people = env_number("BENCH_DISK_PROFILES", 100_000);
    println!(
        "sightline segments benchmark: {runs} runs; {people} profiles for evaluation and reads, {ingest_people} per ingest run, {disk_people} for disk"
    );
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut rows = Vec::new();
    runtime.block_on(async {
        {
            let server = start_server();
            evaluation_and_reads(&server, runs, people, read_seconds, &mut rows).await;
        }
        ingest_comparison(runs, ingest_people, &mut rows).await;
        if disk_people > 0 {
            disk_per_profile(disk_people, &mut rows).await;
        }
    });
    print_table(&rows);
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
}
