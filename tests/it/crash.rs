//! Killing the server with SIGKILL at arbitrary moments loses no
//! acknowledged write and leaves no half-applied merge. After every restart
//! the writes acknowledged before the kill are audited, and at the end all
//! of them: each is still there, every identifier resolves to exactly one
//! live profile that lists it, merged-away ids resolve to a live profile,
//! and the order aggregates equal a recomputation from the stored events.
//!
//! A short run is part of the suite; a soak is
//! `CRASH_CYCLES=1000 cargo test --release --test it crash -- --nocapture`,
//! which prints the figures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightline::api::pb::{self, get_profile_request::Lookup, ingest_request::Item};

use crate::support::*;

const WORKERS: usize = 4;
const PEOPLE_PER_WORKER: usize = 7;
/// Each cycle gives every person a new cookie. Merge protection rightly
/// refuses a profile more than 50 anonymous ids (the default limit), so a
/// long soak moves on to new people before that.
const CYCLES_PER_PERSON: usize = 40;
const CYCLES_DEFAULT: usize = 20;
/// The most events one read returns; profiles with more are audited by
/// count only.
const EVENTS_PER_READ_MAX: u32 = 1000;

/// A small deterministic generator for kill delays.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Debug, Clone)]
enum Write {
    Identify(pb::IdentifyRequest),
    Track(pb::TrackRequest),
}

/// A write the server acknowledged, and the profile it answered with.
#[derive(Debug, Clone)]
struct Acknowledged {
    cycle: usize,
    write: Write,
    profile_id: String,
}

impl Acknowledged {
    fn message_id(&self) -> &str {
        match &self.write {
            Write::Identify(request) => &request.message_id,
            Write::Track(request) => &request.message_id,
        }
    }

    fn identifiers(&self) -> &[pb::Identifier] {
        match &self.write {
            Write::Identify(request) => &request.identifiers,
            Write::Track(request) => &request.identifiers,
        }
    }
}

type Log = Arc<Mutex<Vec<Acknowledged>>>;

fn key(identifier: &pb::Identifier) -> String {
    format!("{}:{}", identifier.kind, identifier.value)
}

/// Calls sent and not yet answered, across the workers of a cycle.
type InFlight = Arc<AtomicUsize>;

async fn worker(port: u16, worker: usize, cycle: usize, log: Log, in_flight: InFlight) {
    let Ok(mut client) = Client::connect(format!("http://127.0.0.1:{port}")).await else {
        return;
    };
    for step in 0.. {
        let generation = cycle / CYCLES_PER_PERSON;
        let person = format!("w{worker}-g{generation}-p{}", step % PEOPLE_PER_WORKER);
        let cookie = id("anonymous_id", &format!("{person}-c{cycle}"));
        let message_id = format!("w{worker}-c{cycle}-s{step}");
        // Every fifth call links a person's cookie to their user id: merges
        // happen while the server may be killed.
        let write = if step % 5 == 4 {
            let mut link = identify(vec![user(&person), cookie]);
            link.message_id = message_id;
            Write::Identify(link)
        } else {
            let identifier = if step % 2 == 0 { user(&person) } else { cookie };
            let mut event = if step % 5 == 3 {
                let mut order = track(vec![identifier], "Order Completed");
                let revenue = 10.0 + (step % 7) as f64;
                order.properties = traits(&[("revenue", number(revenue))]);
                order
            } else {
                track(vec![identifier], "Page Viewed")
            };
            event.message_id = message_id;
            Write::Track(event)
        };
        in_flight.fetch_add(1, Ordering::SeqCst);
        let response = match &write {
            Write::Identify(request) => client.identify(request.clone()).await,
            Write::Track(request) => client.track(request.clone()).await,
        };
        let Ok(response) = response else {
            // Still counted: the kill landed while this call was open.
            return;
        };
        in_flight.fetch_sub(1, Ordering::SeqCst);
        log.lock().expect("lock").push(Acknowledged {
            cycle,
            write,
            profile_id: response.into_inner().profile_id,
        });
    }
}

#[derive(Debug, Default)]
struct Audit {
    writes_checked: u64,
    profiles_checked: u64,
    traits_recomputed: u64,
    violations: Vec<String>,
}

impl Audit {
    fn violation(&mut self, text: String) {
        self.violations.push(text);
    }
}

async fn read(
    client: &mut Client,
    lookup: Lookup,
    events_limit: u32,
) -> Result<pb::Profile, tonic::Status> {
    let response = client
        .get_profile(pb::GetProfileRequest {
            lookup: Some(lookup),
            events_limit,
        })
        .await?;
    response
        .into_inner()
        .profile
        .ok_or_else(|| tonic::Status::internal("no profile in the response"))
}

/// Checks `writes` against the running server.
async fn audit(client: &mut Client, writes: &[Acknowledged], audit: &mut Audit) {
    if writes.is_empty() {
        return;
    }
    // Replayed with their message ids, every acknowledged write must be a
    // duplicate: its idempotency record survived with it.
    let items: Vec<pb::IngestRequest> = writes
        .iter()
        .map(|acked| pb::IngestRequest {
            item: Some(match &acked.write {
                Write::Identify(request) => Item::Identify(request.clone()),
                Write::Track(request) => Item::Track(request.clone()),
            }),
        })
        .collect();
    let summary = client
        .ingest(futures::stream::iter(items))
        .await
        .expect("replay")
        .into_inner();
    audit.writes_checked += writes.len() as u64;
    if summary.duplicate != writes.len() as u64 {
        audit.violation(format!(
            "{} of {} acknowledged writes were not recognised as duplicates ({} applied again, {} rejected)",
            writes.len() as u64 - summary.duplicate,
            writes.len(),
            summary.accepted,
            summary.rejected
        ));
    }

    // Every identifier of every write resolves to a live profile that lists
    // it; the identifiers of one identify are on one profile; the profile id
    // the write was answered with still leads to that profile.
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut events_expected: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for acked in writes {
        let mut resolved = BTreeSet::new();
        for identifier in acked.identifiers() {
            match read(client, Lookup::Identifier(identifier.clone()), 1).await {
                Ok(profile) => {
                    if !identifier_values(&profile).contains(&key(identifier)) {
                        audit.violation(format!(
                            "{} resolves to {}, which does not list it",
                            key(identifier),
                            profile.profile_id
                        ));
                    }
                    resolved.insert(profile.profile_id);
                }
                Err(status) => audit.violation(format!(
                    "{} of acknowledged {} does not resolve: {}",
                    key(identifier),
                    acked.message_id(),
                    status.message()
                )),
            }
        }
        if resolved.len() > 1 {
            audit.violation(format!(
                "the identifiers of {} are on several profiles: {resolved:?}",
                acked.message_id()
            ));
        }
        let Some(current) = resolved.into_iter().next() else {
            continue;
        };
        match read(client, Lookup::ProfileId(acked.profile_id.clone()), 1).await {
            Ok(profile) if profile.profile_id == current => {}
            Ok(profile) => audit.violation(format!(
                "{} was answered with {}, which now reads as {} instead of {current}",
                acked.message_id(),
                acked.profile_id,
                profile.profile_id
            )),
            Err(status) => audit.violation(format!(
                "{} was answered with {}, which no longer reads: {}",
                acked.message_id(),
                acked.profile_id,
                status.message()
            )),
        }
        if let Write::Track(_) = acked.write {
            events_expected
                .entry(current.clone())
                .or_default()
                .push(acked.message_id());
        }
        live.insert(current);
    }

    let mut listed_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for profile_id in &live {
        let profile = match read(
            client,
            Lookup::ProfileId(profile_id.clone()),
            EVENTS_PER_READ_MAX,
        )
        .await
        {
            Ok(profile) => profile,
            Err(status) => {
                audit.violation(format!("{profile_id} does not read: {}", status.message()));
                continue;
            }
        };
        audit.profiles_checked += 1;
        for value in identifier_values(&profile) {
            listed_by
                .entry(value)
                .or_default()
                .insert(profile.profile_id.clone());
        }
        for merged in &profile.merged_profile_ids {
            match read(client, Lookup::ProfileId(merged.clone()), 1).await {
                Ok(alias) if alias.profile_id == profile.profile_id => {}
                Ok(alias) => audit.violation(format!(
                    "{merged}, merged into {profile_id}, reads as {}",
                    alias.profile_id
                )),
                Err(status) => audit.violation(format!(
                    "{merged}, merged into {profile_id}, does not read: {}",
                    status.message()
                )),
            }
        }
        let expected = events_expected
            .get(profile_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if profile.event_count < expected.len() as u64 {
            audit.violation(format!(
                "{profile_id} holds {} events, {} were acknowledged for it",
                profile.event_count,
                expected.len()
            ));
        }
        // Only a profile whose events all came back can be recomputed.
        if profile.events.len() as u64 != profile.event_count {
            continue;
        }
        let stored: BTreeSet<&str> = profile
            .events
            .iter()
            .filter_map(|event| event.provenance.as_ref())
            .map(|provenance| provenance.message_id.as_str())
            .collect();
        for message_id in expected {
            if !stored.contains(message_id) {
                audit.violation(format!(
                    "{profile_id} lacks acknowledged event {message_id}"
                ));
            }
        }
        check_order_aggregates(&profile, audit);
    }
    for (value, profiles) in listed_by {
        if profiles.len() > 1 {
            audit.violation(format!(
                "{value} is listed by several profiles: {profiles:?}"
            ));
        }
    }
}

/// Order count and revenue, recomputed from the stored events.
fn check_order_aggregates(profile: &pb::Profile, audit: &mut Audit) {
    let mut orders = 0u64;
    let mut revenue = 0.0f64;
    for event in &profile.events {
        if event.name != "Order Completed" {
            continue;
        }
        orders += 1;
        let amount = event
            .properties
            .as_ref()
            .and_then(|properties| properties.fields.get("revenue"))
            .and_then(|value| match value.kind {
                Some(prost_types::value::Kind::NumberValue(number)) => Some(number),
                _ => None,
            });
        revenue += amount.unwrap_or_default();
    }
    let Some(computed) = &profile.computed else {
        audit.violation(format!("{} has no computed traits", profile.profile_id));
        return;
    };
    audit.traits_recomputed += 1;
    if computed.frequency != orders || (computed.monetary - revenue).abs() > 1e-6 {
        audit.violation(format!(
            "{}: computed {} orders worth {}, its events hold {orders} worth {revenue}",
            profile.profile_id, computed.frequency, computed.monetary
        ));
    }
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CYCLES_DEFAULT);
    let data_dir = tempfile::tempdir().expect("data dir");
    let log: Log = Arc::default();
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut report = Audit::default();
    // Per cycle: writes acknowledged before the kill, calls open at it.
    let mut evidence: Vec<(usize, usize)> = Vec::with_capacity(cycles);
    for cycle in 0..cycles {
        let (mut child, port) = spawn_binary(data_dir.path());
        let mut client = connect_port(port).await;
        // What the previous cycle got acknowledged before its kill.
        let previous: Vec<Acknowledged> = log
            .lock()
            .expect("lock")
            .iter()
            .filter(|acked| cycle > 0 && acked.cycle == cycle - 1)
            .cloned()
            .collect();
        audit(&mut client, &previous, &mut report).await;
        drop(client);
        let in_flight: InFlight = Arc::default();
        let workers: Vec<_> = (0..WORKERS)
            .map(|index| tokio::spawn(worker(port, index, cycle, log.clone(), in_flight.clone())))
            .collect();
        // The kill lands after a random number of acknowledgements, while
        // the workers keep calling: mid-write, not between runs.
        let wanted = 1 + (random.next() % 40) as usize;
        let acknowledged = || {
            log.lock()
                .expect("lock")
                .iter()
                .filter(|acked| acked.cycle == cycle)
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acknowledged() < wanted && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let open_at_kill = in_flight.load(Ordering::SeqCst);
        child.kill().expect("SIGKILL");
        let acked_before_kill = acknowledged();
        child.wait().expect("reaped");
        for task in workers {
            task.await.expect("worker");
        }
        evidence.push((acked_before_kill, open_at_kill));
    }

    let (mut child, port) = spawn_binary(data_dir.path());
    let mut client = connect_port(port).await;
    let everything = log.lock().expect("lock").clone();
    assert!(
        !everything.is_empty(),
        "the workers got nothing acknowledged"
    );
    let mut last = everything.clone();
    last.retain(|acked| acked.cycle + 1 == cycles);
    audit(&mut client, &last, &mut report).await;
    let mut full = Audit::default();
    audit(&mut client, &everything, &mut full).await;
    let _ = child.kill();
    let _ = child.wait();

    let acked_total: usize = evidence.iter().map(|(acked, _)| acked).sum();
    let open_total: usize = evidence.iter().map(|(_, open)| open).sum();
    println!(
        "crash: {cycles} cycles, {acked_total} writes acknowledged before the kills and \
         {open_total} calls open at them, {} acknowledged writes, {} checks after restarts and {} at the end, \
         {} profiles audited, {} recomputed from their events, {} violations",
        everything.len(),
        report.writes_checked,
        full.writes_checked,
        report.profiles_checked + full.profiles_checked,
        report.traits_recomputed + full.traits_recomputed,
        report.violations.len() + full.violations.len()
    );
    // Evidence that every kill landed in the middle of writing: some writes
    // acknowledged before it, and some calls open at it.
    let idle: Vec<usize> = evidence
        .iter()
        .enumerate()
        .filter(|(_, (acked, open))| *acked == 0 || *open == 0)
        .map(|(cycle, _)| cycle)
        .collect();
    assert!(
        idle.is_empty(),
        "cycles killed with nothing acknowledged or nothing in flight: {idle:?} of {evidence:?}"
    );
    assert!(acked_total >= cycles && open_total >= cycles);
    let violations: Vec<&String> = report.violations.iter().chain(&full.violations).collect();
    assert!(
        violations.is_empty(),
        "{} violations, the first: {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
}
