//! Synthetic people and how they are loaded: deterministic (splitmix64),
//! varied enough that segments, computed traits and fuzzy matching see a
//! realistic population rather than namesakes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sightline::api::pb::{
    self, ingest_request::Item, segment_service_client::SegmentServiceClient,
};
use sightline::quality::names::{FIRST_NAMES, LAST_NAMES};
use tonic::transport::Channel;

use super::connect;

const INGEST_STREAMS: u64 = 4;
pub const DAY_SECONDS: i64 = 86_400;

/// The two rules whose full evaluation is timed.
pub const ACTIVE_GOLD: (&str, &str) = (
    "active-gold",
    r#"profile.computed.lifecycle_stage == "active" && profile.traits.plan == "gold""#,
);
pub const NEAR_LONDON: (&str, &str) = (
    "near-london",
    "geo_distance_km(profile.traits.location.lat, profile.traits.location.lon, 51.5072, -0.1276) < 25.0",
);

/// Eighteen more, so that 20 are defined: trait comparisons, consent,
/// computed traits, distances and one event window, as a real installation
/// would mix them.
pub const OTHER_SEGMENTS: [(&str, &str); 18] = [
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
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn pick<T: Copy>(choices: &[T], random: u64) -> T {
    choices[(random % choices.len() as u64) as usize]
}

pub fn text(value: impl Into<String>) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(value.into())),
    }
}

pub fn number(value: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(value)),
    }
}

pub fn flag(value: bool) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::BoolValue(value)),
    }
}

pub fn object(fields: Vec<(&str, prost_types::Value)>) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    }
}

pub fn identifier(kind: &str, value: String) -> pb::Identifier {
    pb::Identifier {
        kind: kind.to_owned(),
        value,
    }
}

pub fn email_of(person: u64) -> pb::Identifier {
    identifier("email", format!("person{person}@example.com"))
}

pub fn seconds_ago(now_seconds: i64, seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: now_seconds - seconds,
        nanos: 0,
    })
}

pub fn unix_seconds_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The traits every generated person has: plan, city, age and a location
/// near the city's centre.
pub fn common_traits(person: u64) -> Vec<(&'static str, prost_types::Value)> {
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

/// One email and the traits segments read.
pub fn simple_identify(person: u64) -> pb::IngestRequest {
    identify_item(person, common_traits(person))
}

pub fn track(
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

/// A quarter of the segmented people have events: one or two orders within the
/// last year (so lifecycle stages and monetary values vary) and a product
/// view within the last two months.
pub fn simple_events(person: u64, now_seconds: i64) -> Vec<pb::IngestRequest> {
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

/// The disk shape of design 9: 5 identifiers and 10 traits.
pub fn full_identify(person: u64) -> pb::IngestRequest {
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

/// The disk shape's 20 events per person over the last half year.
pub fn full_events(person: u64, now_seconds: i64) -> impl Iterator<Item = pb::IngestRequest> {
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
pub async fn ingest<I, F>(port: u16, people: u64, items_of: F) -> u64
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

/// Items accepted (each only once durable) and the seconds they took, per
/// phase of [`load_people`].
pub struct Loaded {
    pub identifies: u64,
    pub identify_seconds: f64,
    pub events: u64,
    pub event_seconds: f64,
}

impl Loaded {
    pub fn items(&self) -> u64 {
        self.identifies + self.events
    }

    pub fn items_per_second(&self) -> f64 {
        self.items() as f64 / (self.identify_seconds + self.event_seconds)
    }

    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.event_seconds
    }
}

/// People `range`: their identifies first, so that people exist before
/// their events arrive, then their events.
pub async fn load_people<FI, FE, E>(
    port: u16,
    range: std::ops::Range<u64>,
    identify_of: FI,
    events_of: FE,
) -> Loaded
where
    FI: Fn(u64) -> pb::IngestRequest + Copy + Send + 'static,
    FE: Fn(u64) -> E + Copy + Send + 'static,
    E: IntoIterator<Item = pb::IngestRequest> + 'static,
    E::IntoIter: Send + 'static,
{
    let (identifies, identify_seconds) =
        ingest_range(port, range.clone(), move |person| [identify_of(person)]).await;
    let (events, event_seconds) = ingest_range(port, range, events_of).await;
    Loaded {
        identifies,
        identify_seconds,
        events,
        event_seconds,
    }
}

/// The segmented people: returns items per second over both phases.
pub async fn load_simple(port: u16, people: u64, now_seconds: i64) -> f64 {
    load_people(port, 0..people, simple_identify, move |person| {
        simple_events(person, now_seconds)
    })
    .await
    .items_per_second()
}

/// Design 9's disk shape for people `0..people`.
pub async fn load_disk_shape(port: u16, people: u64, now_seconds: i64) -> Loaded {
    load_people(port, 0..people, full_identify, move |person| {
        full_events(person, now_seconds)
    })
    .await
}

pub type Segments = SegmentServiceClient<Channel>;

pub fn segment_request(id: &str, rule: &str) -> pb::PutSegmentRequest {
    pb::PutSegmentRequest {
        segment: Some(pb::Segment {
            id: id.to_owned(),
            name: id.to_owned(),
            rule: rule.to_owned(),
            ..Default::default()
        }),
    }
}

pub async fn segment_state(segments: &mut Segments, id: &str) -> pb::Segment {
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
pub async fn define(segments: &mut Segments, id: &str, rule: &str) -> (Duration, u64) {
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

/// Name, birthday and a UK-style postal code: what fuzzy matching blocks
/// and scores on, so that every identify carrying them is matched online.
pub fn matched_traits(person: u64) -> Vec<(&'static str, prost_types::Value)> {
    let r = mix(person);
    let year = 1940 + (r >> 16) % 66;
    let month = 1 + (r >> 24) % 12;
    let day = 1 + (r >> 28) % 28;
    let district = (r >> 33) % 99 + 1;
    let sector = (r >> 40) % 10;
    let unit = [(r >> 44) % 26, (r >> 49) % 26].map(|letter| (b'A' + letter as u8) as char);
    let address = object(vec![(
        "postal_code",
        text(format!("B{district} {sector}{}{}", unit[0], unit[1])),
    )]);
    vec![
        ("first_name", text(pick(FIRST_NAMES, r))),
        ("last_name", text(pick(LAST_NAMES, r >> 8))),
        ("birthday", text(format!("{year}-{month:02}-{day:02}"))),
        (
            "address",
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(address)),
            },
        ),
    ]
}

fn identify_item(person: u64, traits: Vec<(&str, prost_types::Value)>) -> pb::IngestRequest {
    pb::IngestRequest {
        item: Some(Item::Identify(pb::IdentifyRequest {
            identifiers: vec![email_of(person)],
            traits: Some(object(traits)),
            message_id: format!("identify-{person}"),
            timestamp: None,
            source: "bench".to_owned(),
        })),
    }
}

/// One email and the matched traits only.
pub fn matched_identify(person: u64) -> pb::IngestRequest {
    identify_item(person, matched_traits(person))
}

/// The large population of the design benchmark: what segments read and
/// what fuzzy matching reads, in one identify.
pub fn segmented_matched_identify(person: u64) -> pb::IngestRequest {
    let mut traits = common_traits(person);
    traits.extend(matched_traits(person));
    identify_item(person, traits)
}

/// Loads people `range` over `INGEST_STREAMS` concurrent streams; returns
/// seconds taken.
pub async fn load_range<I, F>(port: u16, range: std::ops::Range<u64>, items_of: F) -> f64
where
    F: Fn(u64) -> I + Copy + Send + 'static,
    I: IntoIterator<Item = pb::IngestRequest> + 'static,
    I::IntoIter: Send + 'static,
{
    ingest_range(port, range, items_of).await.1
}

/// Items accepted and seconds taken.
async fn ingest_range<I, F>(port: u16, range: std::ops::Range<u64>, items_of: F) -> (u64, f64)
where
    F: Fn(u64) -> I + Copy + Send + 'static,
    I: IntoIterator<Item = pb::IngestRequest> + 'static,
    I::IntoIter: Send + 'static,
{
    let started = Instant::now();
    let first = range.start;
    let accepted = ingest(port, range.end - range.start, move |offset| {
        items_of(first + offset)
    })
    .await;
    (accepted, started.elapsed().as_secs_f64())
}

/// Person `pair`'s two halves, one known by email and one by phone, so
/// that an identify carrying both merges two profiles.
pub fn pair_email(pair: u64) -> pb::Identifier {
    identifier("email", format!("pair{pair}@example.org"))
}

pub fn pair_phone(pair: u64) -> pb::Identifier {
    identifier("phone", format!("+44770{:07}", pair % 10_000_000))
}

pub fn pair_halves(pair: u64) -> [pb::IngestRequest; 2] {
    [pair_email(pair), pair_phone(pair)].map(|who| pb::IngestRequest {
        item: Some(Item::Identify(pb::IdentifyRequest {
            identifiers: vec![who.clone()],
            traits: None,
            message_id: format!("half-{}", who.value),
            timestamp: None,
            source: "bench".to_owned(),
        })),
    })
}

/// Deletes the segment if it exists and defines it again, so that every
/// timed evaluation is a full backfill of a new definition rather than a
/// no-op redefinition; returns what [`define`] returns.
pub async fn define_afresh(segments: &mut Segments, id: &str, rule: &str) -> (Duration, u64) {
    match segments
        .delete_segment(pb::DeleteSegmentRequest { id: id.to_owned() })
        .await
    {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::NotFound => {}
        Err(status) => panic!("delete segment {id}: {status}"),
    }
    define(segments, id, rule).await
}
