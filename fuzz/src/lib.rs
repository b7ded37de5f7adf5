//! The bodies of the fuzz targets. `cargo fuzz` runs them from
//! `fuzz_targets/`; the main test suite includes this file by path
//! (`tests/it/fuzz_corpus.rs`) and replays `fuzz/corpus/*` on stable Rust.
//! Each target only uses sightline's public API and must never panic.

use std::sync::OnceLock;

use prost::Message;
use sightline::api::{convert, pb};
use sightline::config::{IdentityConfig, Limits};
use sightline::identity::Normalizer;
use sightline::model::{ProfileId, UnixMillis};
use sightline::service::{ProfileLookup, parse_candidate_id, validate};

const KINDS: [&str; 6] = [
    "email",
    "phone",
    "device_id",
    "user_id",
    "anonymous_id",
    "loyalty_id",
];
const REGIONS: [&str; 4] = ["US", "GB", "DE", "IN"];
const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

/// One normalizer per region, without and with email alias folding, built
/// once: building them per input would dominate the time per run.
fn normalizer(setup: u8) -> &'static Normalizer {
    static NORMALIZERS: OnceLock<Vec<Normalizer>> = OnceLock::new();
    let all = NORMALIZERS.get_or_init(|| {
        [false, true]
            .into_iter()
            .flat_map(|fold| {
                REGIONS.map(|region| {
                    let config = IdentityConfig {
                        default_region: region.to_owned(),
                        fold_email_aliases: fold,
                        custom_kinds: vec!["loyalty_id".to_owned()],
                        ..IdentityConfig::default()
                    };
                    Normalizer::new(&config, Limits::default().identifier_value_bytes_max)
                })
            })
            .collect()
    });
    &all[usize::from(setup) % all.len()]
}

/// Input: a kind selector byte (past the known kinds, the kind name is read
/// from the input up to a NUL), a setup byte (default region and email alias
/// folding), then the value as text.
pub fn normalize_identifier(data: &[u8]) {
    let [selector, setup, rest @ ..] = data else {
        return;
    };
    let (kind, value) = match KINDS.get(usize::from(*selector)) {
        Some(kind) => ((*kind).to_owned(), rest),
        None => {
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let value = rest.get(end + 1..).unwrap_or_default();
            (String::from_utf8_lossy(&rest[..end]).into_owned(), value)
        }
    };
    let value = String::from_utf8_lossy(value);
    let normalizer = normalizer(*setup);
    if let Ok(identifier) = normalizer.normalize(&kind, &value) {
        // A stored identifier is sent back to callers, who look it up again
        // as it is: normalizing a normalized value must give it unchanged.
        let again = normalizer.normalize(&kind, identifier.value());
        assert_eq!(
            again.as_ref(),
            Ok(&identifier),
            "normalization is not idempotent"
        );
    }
}

/// Input: a selector byte choosing the request message, then its protobuf
/// encoding. Whatever decodes goes through the same conversion and
/// validation as a real call, short of the store.
pub fn decode_requests(data: &[u8]) {
    let [selector, setup, bytes @ ..] = data else {
        return;
    };
    let normalizer = normalizer(*setup);
    let limits = Limits::default();
    match selector % 9 {
        0 => {
            if let Ok(request) = pb::IdentifyRequest::decode(bytes) {
                identify(normalizer, &limits, request);
            }
        }
        1 => {
            if let Ok(request) = pb::TrackRequest::decode(bytes) {
                track(normalizer, &limits, request);
            }
        }
        2 => {
            if let Ok(request) = pb::IngestRequest::decode(bytes) {
                match request.item {
                    Some(pb::ingest_request::Item::Identify(item)) => {
                        identify(normalizer, &limits, item);
                    }
                    Some(pb::ingest_request::Item::Track(item)) => {
                        track(normalizer, &limits, item);
                    }
                    None => {}
                }
            }
        }
        3 => {
            if let Ok(request) = pb::GetProfileRequest::decode(bytes) {
                if let Ok(lookup) = convert::profile_lookup(request.lookup) {
                    resolve_lookup(normalizer, lookup);
                }
            }
        }
        4 => {
            if let Ok(request) = pb::UnmergeRequest::decode(bytes) {
                if let Ok(input) = convert::unmerge_input(request) {
                    resolve_lookup(normalizer, input.lookup);
                    let _ = validate::identifiers(normalizer, &limits, &input.identifiers);
                    let _ = validate::provenance(&limits, NOW, input.message_id, String::new());
                }
            }
        }
        5 => {
            if let Ok(request) = pb::UpdateConsentRequest::decode(bytes) {
                if let Ok(input) = convert::consent_input(request) {
                    resolve_lookup(normalizer, input.lookup);
                    let _ = validate::consent_changes(&input.changes);
                    let _ = validate::provenance(&limits, NOW, input.message_id, input.source);
                }
            }
        }
        6 => {
            if let Ok(request) = pb::ReviewMatchCandidateRequest::decode(bytes) {
                let _ = request.decision();
                let _ = parse_candidate_id(&request.candidate_id, "candidate_id");
                let _ = validate::provenance(&limits, NOW, request.message_id, request.reviewer);
            }
        }
        7 => {
            if let Ok(request) = pb::ListMatchCandidatesRequest::decode(bytes) {
                let _ = parse_candidate_id(&request.page_token, "page_token");
            }
        }
        _ => {
            let _ = pb::RunMatchingRequest::decode(bytes);
            let _ = pb::RunMaintenanceRequest::decode(bytes);
        }
    }
}

fn identify(normalizer: &Normalizer, limits: &Limits, request: pb::IdentifyRequest) {
    let Ok(input) = convert::identify_input(request) else {
        return;
    };
    if let Ok(call) = validate::identify(normalizer, limits, NOW, input) {
        check_identifiers(limits, &call.identifiers);
    }
}

fn track(normalizer: &Normalizer, limits: &Limits, request: pb::TrackRequest) {
    let Ok(input) = convert::track_input(request) else {
        return;
    };
    if let Ok(call) = validate::track(normalizer, limits, NOW, input) {
        check_identifiers(limits, &call.identifiers);
    }
}

/// What the store relies on from a validated call.
fn check_identifiers(limits: &Limits, identifiers: &[sightline::model::Identifier]) {
    assert!(!identifiers.is_empty(), "a validated call has identifiers");
    assert!(identifiers.len() <= limits.identifiers_per_call_max);
    for (index, identifier) in identifiers.iter().enumerate() {
        assert!(
            !identifiers[..index].contains(identifier),
            "a validated call repeats an identifier"
        );
    }
}

fn resolve_lookup(normalizer: &Normalizer, lookup: ProfileLookup) {
    match lookup {
        ProfileLookup::ProfileId(text) => {
            if let Ok(id) = text.parse::<ProfileId>() {
                assert_eq!(id.to_string().parse::<ProfileId>(), Ok(id));
            }
        }
        ProfileLookup::Identifier(raw) => {
            let _ = validate::identifier(normalizer, "identifier", &raw);
        }
    }
}

/// Any text as a segment rule: checking it must answer Ok or a positioned
/// error, and a rule that passes must evaluate (to anything) without
/// panicking, against an empty scope and against profiles made from the
/// input's bytes (traits of every shape, orders, consents, identifiers).
pub fn rule_compile(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match sightline::segments::Rule::compile(source) {
        Ok(rule) => {
            let _ = rule.matches(&cel::Context::default());
            let registry = sightline::segments::SegmentRegistry::new(
                std::sync::Arc::new(sightline::model::ManualClock::new(
                    sightline::model::UnixMillis(1_717_200_000_000),
                )),
                sightline::computed::LifecycleThresholds {
                    active_days: 90,
                    lapsing_days: 365,
                },
                sightline::computed::RfmCache::default(),
            );
            let matcher = registry.matcher(rule);
            for seed in 0..3u8 {
                let events = CountingEvents(u64::from(seed));
                let facts = generated_profile(data, seed, &events);
                let _ = matcher.matches(&facts);
            }
        }
        Err(error) => {
            assert!(!error.message.is_empty());
            if let Some((line, column)) = error.position {
                assert!(line >= 1 && column >= 1, "{error}");
            }
        }
    }
}

/// Every windowed event count answers `n`.
struct CountingEvents(u64);

impl sightline::model::EventCounter for CountingEvents {
    fn count_since(&self, _name: &str, _since: sightline::model::UnixMillis) -> u64 {
        self.0
    }
}

/// A profile whose values come from `data`: numbers, text, lists, nested
/// objects, a location, orders and consents, so that a rule's field reads,
/// comparisons and functions meet real values of every type.
fn generated_profile<'a>(
    data: &[u8],
    seed: u8,
    events: &'a dyn sightline::model::EventCounter,
) -> sightline::model::ProfileFacts<'a> {
    use serde_json::json;
    use sightline::model::{Channel, Purpose, UnixMillis};
    let byte = |index: usize| {
        data.get(index % data.len().max(1))
            .copied()
            .unwrap_or(0)
            .wrapping_add(seed)
    };
    let text: String = data
        .iter()
        .take(12)
        .map(|b| char::from(b'a' + b.wrapping_add(seed) % 26))
        .collect();
    let traits = vec![
        (
            "plan".to_owned(),
            json!(["gold", "free", text.as_str()][usize::from(byte(0)) % 3]),
        ),
        ("score".to_owned(), json!(f64::from(byte(1)) - 100.0)),
        ("vip".to_owned(), json!(byte(2) % 2 == 0)),
        ("tags".to_owned(), json!([text.clone(), "x"])),
        (
            "nested".to_owned(),
            json!({"a": {"b": byte(3)}, "list": [1, "two", null]}),
        ),
        (
            "location".to_owned(),
            json!({"lat": f64::from(byte(4)) - 90.0, "lon": f64::from(byte(5))}),
        ),
        ("birthday".to_owned(), json!("1990-04-01")),
        ("nothing".to_owned(), serde_json::Value::Null),
    ];
    let mut activity = sightline::computed::Activity::default();
    for order in 0..u64::from(byte(6) % 4) {
        let properties =
            json!({"revenue": f64::from(byte(7)) + order as f64, "products": [{"category": text}]});
        let at = UnixMillis(1_717_000_000_000 - i64::try_from(order).unwrap_or(0) * 86_400_000);
        if let serde_json::Value::Object(properties) = properties {
            activity.record_event("Order Completed", &properties, at);
        }
    }
    let consents = match byte(8) % 3 {
        0 => vec![],
        1 => vec![(Channel::Email, Purpose::Marketing)],
        _ => vec![
            (Channel::Email, Purpose::Marketing),
            (Channel::Sms, Purpose::Personalisation),
        ],
    };
    sightline::model::ProfileFacts {
        id: sightline::model::ProfileId(u64::from(byte(9)) + 1),
        traits,
        activity,
        consents,
        identifier_kinds: vec!["email".to_owned(), "user_id".to_owned()],
        events,
    }
}
