//! Every metric of design 9 in one run, each beside the reference measured
//! in the same run, judged in one Markdown table:
//! `cargo bench --bench design`.
//!
//! The server is the real release binary, a separate process on loopback.
//! The references are separate processes too, this binary started again
//! with a role in its environment: the raw sled reference
//! (`BENCH_SLED_REFERENCE`: durable batches as large as the server's mean
//! group commit in the same run, `apply_batch`
//! then flush and `fdatasync` as the server's writer does, with the key and
//! value sizes of the event records the server stored in this run; then
//! point reads on one thread) and the echo reference (`BENCH_ECHO_PORT`:
//! `tonic-health`'s `Health/Check`, see `common::echo`).
//!
//! What runs, in order:
//! 1. the disk shape: `BENCH_DISK_PROFILES` people with 5 identifiers,
//!    10 traits and 20 events each, no segments; data directory per
//!    profile, then (server stopped) live key and value bytes per key
//!    prefix against the files' size, and the typical event key and value
//!    sizes the sled reference is given;
//! 2. per run: durable ingest on a fresh server with 20 segments defined
//!    (`BENCH_INGEST_PROFILES` people of the disk shape; events per second
//!    once they exist), then the sled reference in batches of the mean
//!    group size the server committed (from its metrics), both reported;
//! 3. the large population on one server with 18 segments defined:
//!    identifies with traits segments read and names, birthday and postal
//!    code that fuzzy matching reads, a quarter of people with 2–3 events.
//!    Time per matched identify at `BENCH_MATCH_SMALL` profiles and at
//!    `BENCH_PROFILES`; then per run: full evaluation of two new segments,
//!    `GetProfile` and `CheckMembership` at 16 in flight beside the echo,
//!    merging `Identify` calls at a fixed rate beside the echo at that
//!    rate; then the server's peak RSS;
//! 4. per run on a fresh server: subject export and erasure of
//!    `BENCH_PRIVACY_PEOPLE` people with 1,000 events each.
//!
//! Sizes (defaults; `BENCH_QUICK=1` gives the quick ones in brackets, and
//! any variable set still wins):
//! `BENCH_RUNS` 3 (1), `BENCH_PROFILES` 1000000 (20000),
//! `BENCH_MATCH_SMALL` 10000 (2000), `BENCH_PROBE` identifies timed per
//! run and size 5000 (1000), `BENCH_DISK_PROFILES` 20000 (2000),
//! `BENCH_INGEST_PROFILES` 5000 (1000), `BENCH_PRIVACY_PEOPLE` 50 (10),
//! `BENCH_READ_SECONDS` 5 (2) measured per closed loop after 1 s of
//! warm-up, `BENCH_MERGE_SECONDS` 5 (2) at `BENCH_MERGE_RATE` 1000 merges/s,
//! `BENCH_SLED_INSERTS` 200000 (50000). `BENCH_SERVER_CONFIG` names a
//! server config file.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::calls::{CheckMembership, GetProfile, IdentifyMerge};
use common::echo::{HealthCheck, serve_if_echo, start_echo};
use common::measure::{
    CALLS_IN_FLIGHT, Check, LoopFigures, Row, closed_loop, median, open_loop, print_table,
};
use common::population::{
    ACTIVE_GOLD, NEAR_LONDON, OTHER_SEGMENTS, Segments, define, define_afresh, load_disk_shape,
    load_people, load_range, mix, pair_halves, segmented_matched_identify, simple_events,
    unix_seconds_now,
};
use common::{channel, directory_bytes, env_number, memory_kib, start_server};
use sightline::api::pb;

/// Set in the environment of the sled reference process:
/// `key_bytes,value_bytes,inserts,read_seconds`.
const SLED_ROLE_VARIABLE: &str = "BENCH_SLED_REFERENCE";
/// Inserts per durable batch when the reference runs on its own (the
/// matching figures); beside ingest it uses the server's mean group size.
const SLED_BATCH: usize = 1_000;
/// The server's default cache, so that the reference reads from memory as
/// much as the server can.
const SLED_CACHE_BYTES: u64 = 1024 * 1024 * 1024;
const EVENTS_PER_PRIVACY_SUBJECT: u64 = 1_000;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

struct Sizes {
    quick: bool,
    runs: u64,
    profiles: u64,
    match_small: u64,
    probe: u64,
    disk_profiles: u64,
    ingest_profiles: u64,
    privacy_people: u64,
    read_seconds: u64,
    merge_seconds: u64,
    merge_rate: u64,
    sled_inserts: u64,
}

impl Sizes {
    fn from_environment() -> Self {
        Self::read(env_number("BENCH_QUICK", 0) != 0)
    }

    /// The sizes with or without quick mode's defaults; variables set
    /// still win.
    fn read(quick: bool) -> Self {
        let size = |name: &str, default: u64, quick_default: u64| {
            env_number(name, if quick { quick_default } else { default })
        };
        let profiles = size("BENCH_PROFILES", 1_000_000, 20_000).max(1);
        Self {
            quick,
            runs: size("BENCH_RUNS", 3, 1).max(1),
            profiles,
            match_small: size("BENCH_MATCH_SMALL", 10_000, 2_000).clamp(1, profiles),
            probe: size("BENCH_PROBE", 5_000, 1_000).max(1),
            disk_profiles: size("BENCH_DISK_PROFILES", 20_000, 2_000).max(1),
            ingest_profiles: size("BENCH_INGEST_PROFILES", 5_000, 1_000).max(1),
            privacy_people: size("BENCH_PRIVACY_PEOPLE", 50, 10).max(1),
            read_seconds: size("BENCH_READ_SECONDS", 5, 2).max(1),
            merge_seconds: size("BENCH_MERGE_SECONDS", 5, 2).max(1),
            merge_rate: size("BENCH_MERGE_RATE", 1_000, 1_000).max(1),
            sled_inserts: size("BENCH_SLED_INSERTS", 200_000, 50_000).max(SLED_BATCH as u64),
        }
    }

    /// Pairs merged per run, warm-up included.
    fn merges_per_run(&self) -> u64 {
        self.merge_rate * (self.merge_seconds + 1)
    }
}

/// Rates the runtime estimate assumes; measured ones replace them at the
/// end of a run.
#[derive(Clone, Copy)]
struct Rates {
    /// Items of the large population per second, 18 segments defined.
    large_load_items_per_second: f64,
    /// Items of the disk shape per second, no segments.
    disk_load_items_per_second: f64,
    /// Items of the ingest runs per second, 20 segments defined.
    ingest_items_per_second: f64,
    /// Seconds to evaluate the two timed segments over 1M profiles.
    evaluation_seconds_per_million: f64,
    /// Items of the privacy load per second.
    privacy_items_per_second: f64,
}

/// Observed on the 2-core machine of docs/performance.md, under load.
const ASSUMED_RATES: Rates = Rates {
    large_load_items_per_second: 2_500.0,
    disk_load_items_per_second: 5_000.0,
    ingest_items_per_second: 4_000.0,
    evaluation_seconds_per_million: 35.0,
    privacy_items_per_second: 15_000.0,
};

/// Items per person of the large population: an identify, and for a
/// quarter of people 1–2 orders and a view.
const LARGE_ITEMS_PER_PERSON: f64 = 1.625;
const DISK_ITEMS_PER_PERSON: f64 = 21.0;

fn estimate_seconds(sizes: &Sizes, rates: &Rates) -> f64 {
    let runs = sizes.runs as f64;
    let large_items = (sizes.profiles + 2 * sizes.runs * sizes.probe) as f64
        * LARGE_ITEMS_PER_PERSON
        + (2 * sizes.runs * sizes.merges_per_run()) as f64;
    let disk_items = sizes.disk_profiles as f64 * DISK_ITEMS_PER_PERSON;
    let ingest_items = runs * sizes.ingest_profiles as f64 * DISK_ITEMS_PER_PERSON;
    let privacy_items = runs * (sizes.privacy_people * (EVENTS_PER_PRIVACY_SUBJECT + 1)) as f64;
    // Four closed loops and two open loops per run, each with a second of
    // warm-up; the sled reference at ~80k inserts/s and its reads.
    let loops =
        runs * (4.0 * (sizes.read_seconds + 1) as f64 + 2.0 * (sizes.merge_seconds + 1) as f64);
    let sled = runs * (sizes.sled_inserts as f64 * 1.1 / 80_000.0 + sizes.read_seconds as f64);
    let evaluation = runs * rates.evaluation_seconds_per_million * sizes.profiles as f64 / 1e6;
    large_items / rates.large_load_items_per_second
        + disk_items / rates.disk_load_items_per_second
        + ingest_items / rates.ingest_items_per_second
        + privacy_items / rates.privacy_items_per_second
        + loops
        + sled
        + evaluation
        // Server starts, segment definitions, stops.
        + 10.0 * runs
}

fn main() {
    if serve_if_echo() || serve_if_sled_reference() {
        return;
    }
    let sizes = Sizes::from_environment();
    print_header(&sizes);
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut rows = Vec::new();
    let mut rates = ASSUMED_RATES;

    let disk = runtime.block_on(disk_shape(&sizes, &mut rows, &mut rates));
    runtime.block_on(ingest_against_sled(&sizes, &disk, &mut rows, &mut rates));
    runtime.block_on(large_population(&sizes, &mut rows, &mut rates));
    runtime.block_on(privacy(&sizes, &mut rows, &mut rates));

    print_table(&rows);
    print_breakdown(&disk);
    let elapsed = started.elapsed().as_secs_f64();
    let defaults = Sizes::read(false);
    // A small population loads and evaluates faster per item than a
    // million does (the cache holds it), so both estimates are shown.
    println!(
        "\nTotal {elapsed:.0} s. The default sizes would take about {:.0} min at this run's rates, {:.0} min at the assumed ones.",
        estimate_seconds(&defaults, &rates) / 60.0,
        estimate_seconds(&defaults, &ASSUMED_RATES) / 60.0
    );
}

fn print_header(sizes: &Sizes) {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let ram_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib * 1024.0 / GIB);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut settings: Vec<String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("BENCH_"))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    settings.sort();
    settings.push("cargo bench --bench design".to_owned());
    println!("## Design 9 benchmark\n");
    println!("- machine: nproc {cpus}; CPU {cpu_model}; RAM {ram_gib:.1} GiB");
    println!("- command: `{}`", settings.join(" "));
    println!(
        "- sizes: {} run(s){}; {} profiles (matching also at {}; {} identifies timed per run and size); disk shape {} people; ingest {} people per run; privacy {} people x {} events; closed loops {} s; merges {} s at {}/s; sled reference {} inserts",
        sizes.runs,
        if sizes.quick { ", quick mode" } else { "" },
        sizes.profiles,
        sizes.match_small,
        sizes.probe,
        sizes.disk_profiles,
        sizes.ingest_profiles,
        sizes.privacy_people,
        EVENTS_PER_PRIVACY_SUBJECT,
        sizes.read_seconds,
        sizes.merge_seconds,
        sizes.merge_rate,
        sizes.sled_inserts
    );
    println!(
        "- estimated runtime: {:.0} min (at assumed rates; default sizes: {:.0} min)\n",
        estimate_seconds(sizes, &ASSUMED_RATES) / 60.0,
        estimate_seconds(&Sizes::read(false), &ASSUMED_RATES) / 60.0
    );
}

/// Live bytes under one key prefix of the store's tree.
#[derive(Default)]
struct PrefixBytes {
    entries: u64,
    key_bytes: u64,
    value_bytes: u64,
}

struct DiskShape {
    profiles: u64,
    file_bytes: u64,
    /// By the key's first byte, the table tag of `src/store/keys.rs`.
    prefixes: BTreeMap<u8, PrefixBytes>,
    /// Other sled trees, by name.
    other_trees: BTreeMap<String, PrefixBytes>,
}

impl DiskShape {
    fn event_sizes(&self) -> (u64, u64) {
        let events = self
            .prefixes
            .get(&b'e')
            .filter(|events| events.entries > 0)
            .expect("the disk shape stored events");
        (
            events.key_bytes / events.entries,
            events.value_bytes / events.entries,
        )
    }
}

/// Design 9's disk shape, then where its bytes go.
async fn disk_shape(sizes: &Sizes, rows: &mut Vec<Row>, rates: &mut Rates) -> DiskShape {
    let mut server = start_server();
    let people = sizes.disk_profiles;
    let loaded = load_disk_shape(server.port, people, unix_seconds_now()).await;
    let items = loaded.items();
    rates.disk_load_items_per_second = loaded.items_per_second();
    server.stop();
    let file_bytes = directory_bytes(server.data_dir());
    println!(
        "disk shape: {people} people, {items} items at {:.0} items/s; data dir {:.1} MiB",
        rates.disk_load_items_per_second,
        file_bytes as f64 / (1024.0 * 1024.0)
    );
    rows.push(
        Row::new(
            format!("disk per profile, 5 ids + 10 traits + 20 events ({people} people), bytes"),
            &[file_bytes as f64 / people as f64],
        )
        .target("≤ 3072", Check::AtMost(3072.0)),
    );
    let (prefixes, other_trees) = live_bytes(server.data_dir());
    DiskShape {
        profiles: people,
        file_bytes,
        prefixes,
        other_trees,
    }
}

type LiveBytes = (BTreeMap<u8, PrefixBytes>, BTreeMap<String, PrefixBytes>);

/// Opens a stopped server's database directly: only the bench reads it.
fn live_bytes(data_dir: &Path) -> LiveBytes {
    let db = sled::Config::new()
        .path(data_dir)
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .expect("open the stopped server's database");
    let mut prefixes: BTreeMap<u8, PrefixBytes> = BTreeMap::new();
    let mut other_trees = BTreeMap::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).expect("open tree");
        let name = String::from_utf8_lossy(&name).into_owned();
        let mut whole = PrefixBytes::default();
        for entry in tree.iter() {
            let (key, value) = entry.expect("read entry");
            let bytes = if name == "sightline" {
                prefixes
                    .entry(key.first().copied().unwrap_or(0))
                    .or_default()
            } else {
                &mut whole
            };
            bytes.entries += 1;
            bytes.key_bytes += key.len() as u64;
            bytes.value_bytes += value.len() as u64;
        }
        if name != "sightline" {
            other_trees.insert(name, whole);
        }
    }
    (prefixes, other_trees)
}

fn prefix_name(tag: u8) -> &'static str {
    match tag {
        b'i' => "identifier → profile",
        b'p' => "profile record",
        b'a' => "alias (merged away)",
        b'e' => "event",
        b'm' => "message id (idempotency)",
        b'h' => "hub",
        b'f' => "fuzzy blocking key",
        b'c' => "match candidate",
        b'r' => "rejection",
        b'd' => "segment definition",
        b'g' => "membership",
        b'x' => "suppression",
        b'q' => "privacy request",
        b'l' => "access log",
        b's' => "counter",
        _ => "other",
    }
}

fn print_breakdown(disk: &DiskShape) {
    let per_profile = |bytes: u64| bytes as f64 / disk.profiles as f64;
    println!(
        "\n### Where the disk shape's bytes go ({} profiles)\n",
        disk.profiles
    );
    println!(
        "| key prefix | entries | entries/profile | key bytes (avg) | value bytes (avg) | live bytes/profile | share of files |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut live = 0;
    let rows = disk
        .prefixes
        .iter()
        .map(|(tag, bytes)| (format!("`{}` {}", *tag as char, prefix_name(*tag)), bytes))
        .chain(
            disk.other_trees
                .iter()
                .map(|(name, bytes)| (format!("tree `{name}`"), bytes)),
        );
    for (name, bytes) in rows.filter(|(_, bytes)| bytes.entries > 0) {
        let total = bytes.key_bytes + bytes.value_bytes;
        live += total;
        let average = |sum: u64| sum as f64 / bytes.entries.max(1) as f64;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1}% |",
            bytes.entries,
            bytes.entries as f64 / disk.profiles as f64,
            average(bytes.key_bytes),
            average(bytes.value_bytes),
            per_profile(total),
            100.0 * total as f64 / disk.file_bytes as f64
        );
    }
    println!(
        "| **live keys and values** | | | | | **{:.0}** | **{:.1}%** |",
        per_profile(live),
        100.0 * live as f64 / disk.file_bytes as f64
    );
    println!(
        "| **files (data dir, allocated)** | | | | | **{:.0}** | 100% |",
        per_profile(disk.file_bytes)
    );
}

/// The raw engine as the server's writer drives it, in its own process.
struct SledFigures {
    inserts_per_second: f64,
    reads_per_second: f64,
}

fn run_sled_reference(
    key_bytes: u64,
    value_bytes: u64,
    batch: usize,
    sizes: &Sizes,
) -> SledFigures {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .env(
            SLED_ROLE_VARIABLE,
            format!(
                "{key_bytes},{value_bytes},{},{},{batch}",
                sizes.sled_inserts, sizes.read_seconds
            ),
        )
        .stderr(Stdio::inherit())
        .output()
        .expect("run sled reference");
    assert!(output.status.success(), "sled reference failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<f64> = stdout
        .split_whitespace()
        .filter_map(|figure| figure.parse().ok())
        .collect();
    assert_eq!(figures.len(), 2, "sled reference said {stdout:?}");
    SledFigures {
        inserts_per_second: figures[0],
        reads_per_second: figures[1],
    }
}

/// To be called first in `main`: when this process was started as the sled
/// reference, measures, prints `inserts/s reads/s` and returns true.
fn serve_if_sled_reference() -> bool {
    let Ok(arguments) = std::env::var(SLED_ROLE_VARIABLE) else {
        return false;
    };
    let numbers: Vec<u64> = arguments
        .split(',')
        .map(|number| number.parse().expect("sled reference argument"))
        .collect();
    let [key_bytes, value_bytes, inserts, read_seconds, batch] = numbers[..] else {
        panic!("{SLED_ROLE_VARIABLE} wants key_bytes,value_bytes,inserts,read_seconds,batch");
    };
    let batch = (batch as usize).max(1);
    let directory = tempfile::tempdir().expect("sled reference dir");
    // The server's own settings (src/store/sled_store.rs).
    let db = sled::Config::new()
        .path(directory.path())
        .cache_capacity(SLED_CACHE_BYTES)
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("open sled");
    let tree = db.open_tree("sightline").expect("tree");
    let log_file = std::fs::File::open(directory.path().join("db")).expect("sled log file");
    // Like event keys: a profile among many, then time and sequence, so
    // that inserts land all over the tree as a population's events do.
    let profiles = (inserts / 20).max(1);
    let key = |index: u64| {
        let mut key = Vec::with_capacity(key_bytes as usize);
        key.push(b'e');
        key.extend_from_slice(&(mix(index) % profiles).to_be_bytes());
        key.extend_from_slice(&index.to_be_bytes());
        key.resize(key_bytes as usize, 0);
        key
    };
    // Incompressible, like JSON properties are to sled (it does not
    // compress by default).
    let value = |index: u64| {
        (0..value_bytes.div_ceil(8))
            .flat_map(|word| mix(index ^ (word << 40)).to_le_bytes())
            .take(value_bytes as usize)
            .collect::<Vec<u8>>()
    };
    let insert_batches = |range: std::ops::Range<u64>| {
        for start in range.clone().step_by(batch) {
            let mut writes = sled::Batch::default();
            for index in start..(start + batch as u64).min(range.end) {
                writes.insert(key(index), value(index));
            }
            tree.apply_batch(writes).expect("apply batch");
            db.flush().expect("flush");
            log_file.sync_data().expect("fdatasync");
        }
    };
    // A tenth of warm-up, untimed: the tree's first splits and the page
    // cache's first fills are not what the steady state costs.
    let warm_up = (inserts / 10).next_multiple_of(batch as u64);
    insert_batches(0..warm_up);
    let started = Instant::now();
    insert_batches(warm_up..warm_up + inserts);
    let inserts_per_second = inserts as f64 / started.elapsed().as_secs_f64();

    let stored = warm_up + inserts;
    let read_for = |duration: Duration, mut random: u64| {
        let until = Instant::now() + duration;
        let mut reads = 0u64;
        while Instant::now() < until {
            // Checking the clock every read would cost as much as a read.
            for _ in 0..256 {
                random = mix(random);
                let found = tree.get(key(random % stored)).expect("get");
                assert!(found.is_some());
                reads += 1;
            }
        }
        reads
    };
    read_for(Duration::from_millis(500), 1);
    let reads = read_for(Duration::from_secs(read_seconds), 2);
    println!(
        "{inserts_per_second} {}",
        reads as f64 / read_seconds as f64
    );
    true
}

async fn define_segments(port: u16, segments: &[(&str, &str)]) -> Segments {
    let mut client = pb::segment_service_client::SegmentServiceClient::new(channel(port).await);
    for (id, rule) in segments {
        define(&mut client, id, rule).await;
    }
    client
}

/// Metric 1: durable ingest of events with 20 segments defined, beside raw
/// sled durable inserts of the same sizes; and sled's point reads.
async fn ingest_against_sled(
    sizes: &Sizes,
    disk: &DiskShape,
    rows: &mut Vec<Row>,
    rates: &mut Rates,
) {
    let (key_bytes, value_bytes) = disk.event_sizes();
    println!("event records in the disk shape: {key_bytes} B key, {value_bytes} B value");
    let (mut sled_inserts, mut sled_reads, mut events, mut items) =
        (vec![], vec![], vec![], vec![]);
    let mut group_sizes = vec![];
    for run in 1..=sizes.runs {
        let metrics_port = common::free_port();
        let server = common::start_server_with(&[
            "--metrics-listen".to_owned(),
            format!("127.0.0.1:{metrics_port}"),
        ]);
        let all_segments: Vec<_> = [ACTIVE_GOLD, NEAR_LONDON]
            .into_iter()
            .chain(OTHER_SEGMENTS)
            .collect();
        define_segments(server.port, &all_segments).await;
        let loaded = load_disk_shape(server.port, sizes.ingest_profiles, unix_seconds_now()).await;
        let events_per_second = loaded.events_per_second();
        // Like with like: the reference commits batches as large as the
        // groups the server committed in this run.
        let group_mean = mean_group_calls(metrics_port).await;
        drop(server);
        let batch = (group_mean.round() as usize).max(1);
        let sled = run_sled_reference(key_bytes, value_bytes, batch, sizes);
        println!(
            "run {run}: Ingest with 20 segments {events_per_second:.0} events/s in groups of {group_mean:.0} calls on average; raw sled {:.0} durable inserts/s in batches of {batch}, {:.0} reads/s on one thread",
            sled.inserts_per_second, sled.reads_per_second
        );
        sled_inserts.push(sled.inserts_per_second);
        sled_reads.push(sled.reads_per_second);
        events.push(events_per_second);
        items.push(loaded.items_per_second());
        group_sizes.push(group_mean);
    }
    rates.ingest_items_per_second = median(&items);
    rows.push(
        Row::new(
            format!(
                "durable `Ingest` of events, 20 segments, events/s (ref: raw sled durable inserts/s in batches of the server's mean group, {:.0} calls)",
                median(&group_sizes)
            ),
            &events,
        )
        .target("≥ 0.40 × sled", Check::RatioAtLeast(0.40))
        .reference(&sled_inserts),
    );
    rows.push(
        Row::new(
            "raw sled point reads/s, one thread (the reads reference)",
            &sled_reads,
        )
        .target("(§9 machine: ~350k)", Check::Context),
    );
}

/// The mean number of calls per group commit the server made, from its
/// metrics endpoint.
async fn mean_group_calls(port: u16) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("scrape");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("scrape");
    let value = |series: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        value("sightline_write_group_calls_sum"),
        value("sightline_write_group_calls_count"),
    );
    if count > 0.0 {
        sum / count
    } else {
        SLED_BATCH as f64
    }
}

/// Loads people `range` of the large population; returns items per
/// second.
async fn load_large(port: u16, range: std::ops::Range<u64>, now_seconds: i64) -> f64 {
    load_people(port, range, segmented_matched_identify, move |person| {
        simple_events(person, now_seconds)
    })
    .await
    .items_per_second()
}

/// µs per matched identify, through `Ingest`, once per run.
async fn matching_probe(port: u16, sizes: &Sizes, loaded: &mut u64) -> Vec<f64> {
    let mut per_identify_us = Vec::new();
    for _ in 0..sizes.runs {
        let seconds = load_range(port, *loaded..*loaded + sizes.probe, |person| {
            [segmented_matched_identify(person)]
        })
        .await;
        *loaded += sizes.probe;
        per_identify_us.push(seconds * 1e6 / sizes.probe as f64);
    }
    per_identify_us
}

/// Medians of a closed loop's figures over runs.
#[derive(Default)]
struct LoopRuns {
    per_second: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
}

impl LoopRuns {
    fn push(&mut self, figures: LoopFigures) {
        self.per_second.push(figures.per_second);
        self.p50_us.push(figures.p50_us);
        self.p99_us.push(figures.p99_us);
    }
}

/// Metrics 2, 3, 4, 7 and 8 on one large population.
async fn large_population(sizes: &Sizes, rows: &mut Vec<Row>, rates: &mut Rates) {
    let server = start_server();
    let mut segments = define_segments(server.port, &OTHER_SEGMENTS).await;
    let now_seconds = unix_seconds_now();
    let mut loaded = 0;
    let started = Instant::now();
    let small_rate = load_large(server.port, 0..sizes.match_small, now_seconds).await;
    loaded = loaded.max(sizes.match_small);
    let matching_small = matching_probe(server.port, sizes, &mut loaded).await;
    let rest = loaded..sizes.profiles.max(loaded);
    let large_rate = if rest.is_empty() {
        small_rate
    } else {
        load_large(server.port, rest.clone(), now_seconds).await
    };
    loaded = rest.end;
    println!(
        "large population: {loaded} people with 18 segments defined in {:.0} s ({large_rate:.0} items/s)",
        started.elapsed().as_secs_f64()
    );
    rates.large_load_items_per_second = large_rate;
    let matching_large = matching_probe(server.port, sizes, &mut loaded).await;
    println!(
        "matched identify: {:.0} us at {} profiles, {:.0} us at {loaded}",
        median(&matching_small),
        sizes.match_small,
        median(&matching_large)
    );
    let pairs = sizes.runs * sizes.merges_per_run();
    load_range(server.port, 0..pairs, pair_halves).await;
    // Profiles the evaluations go over: the people, and the pairs' halves
    // still unmerged at each run.
    let mut profiles = loaded + 2 * pairs;
    let evaluated_profiles = profiles;

    let echo = start_echo();
    let mut evaluation: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let (mut get_profile, mut check_membership, mut echo_closed) = (
        LoopRuns::default(),
        LoopRuns::default(),
        LoopRuns::default(),
    );
    let (mut merges, mut echo_open) = (LoopRuns::default(), LoopRuns::default());
    let mut evaluation_seconds = Vec::new();
    for run in 1..=sizes.runs {
        let mut run_seconds = 0.0;
        for (id, rule) in [ACTIVE_GOLD, NEAR_LONDON] {
            let (elapsed, members) = define_afresh(&mut segments, id, rule).await;
            let seconds_per_million = elapsed.as_secs_f64() * 1e6 / profiles as f64;
            println!(
                "run {run}: `{id}` evaluated over {profiles} profiles in {:.2} s ({seconds_per_million:.2} s per 1M), {members} members",
                elapsed.as_secs_f64()
            );
            evaluation.entry(id).or_default().push(seconds_per_million);
            run_seconds += seconds_per_million;
        }
        evaluation_seconds.push(run_seconds);
        let seconds = sizes.read_seconds;
        echo_closed.push(closed_loop(echo.port, seconds, HealthCheck::new).await);
        get_profile.push(
            closed_loop(server.port, seconds, |channel| {
                GetProfile::new(channel, loaded)
            })
            .await,
        );
        check_membership.push(
            closed_loop(server.port, seconds, |channel| {
                CheckMembership::new(channel, loaded)
            })
            .await,
        );
        let (echo_figures, _) = open_loop(
            echo.port,
            sizes.merge_rate,
            sizes.merge_seconds,
            HealthCheck::new,
        )
        .await;
        echo_open.push(echo_figures);
        let first_pair = (run - 1) * sizes.merges_per_run();
        let (merge_figures, merged) = open_loop(
            server.port,
            sizes.merge_rate,
            sizes.merge_seconds,
            |channel| IdentifyMerge::new(channel, first_pair),
        )
        .await;
        merges.push(merge_figures);
        profiles -= merged;
        println!(
            "run {run}: x{CALLS_IN_FLIGHT} GetProfile {:.0} req/s p99 {:.0} us, CheckMembership {:.0} req/s p99 {:.0} us, echo {:.0} req/s p99 {:.0} us; merges at {}/s p99 {:.0} us, echo at that rate p99 {:.0} us",
            get_profile.per_second[run as usize - 1],
            get_profile.p99_us[run as usize - 1],
            check_membership.per_second[run as usize - 1],
            check_membership.p99_us[run as usize - 1],
            echo_closed.per_second[run as usize - 1],
            echo_closed.p99_us[run as usize - 1],
            sizes.merge_rate,
            merge_figures.p99_us,
            echo_figures.p99_us
        );
    }
    rates.evaluation_seconds_per_million = median(&evaluation_seconds);
    let (peak_kib, _) = memory_kib(server.pid());
    drop(echo);

    let ms = |values: &[f64]| values.iter().map(|us| us / 1000.0).collect::<Vec<_>>();
    rows.push(
        Row::new(
            format!(
                "`Identify` merging two profiles at {}/s, p99 ms (ref: echo p99 at that rate)",
                sizes.merge_rate
            ),
            &ms(&merges.p99_us),
        )
        .target("≤ 5 ms", Check::AtMost(5.0))
        .reference(&ms(&echo_open.p99_us)),
    );
    rows.push(
        Row::new(
            "`Identify` merging, p50 ms (ref: echo p50)",
            &ms(&merges.p50_us),
        )
        .reference(&ms(&echo_open.p50_us)),
    );
    rows.push(
        Row::new(
            "`GetProfile` by email, 16 in flight, req/s (ref: echo)",
            &get_profile.per_second,
        )
        .target("≥ 0.60 × echo", Check::RatioAtLeast(0.60))
        .reference(&echo_closed.per_second),
    );
    rows.push(
        Row::new("`GetProfile` p99, µs (ref: echo p99)", &get_profile.p99_us)
            .target("≤ 1.5 × echo", Check::RatioAtMost(1.5))
            .reference(&echo_closed.p99_us),
    );
    rows.push(
        Row::new("`GetProfile` p50, µs (ref: echo p50)", &get_profile.p50_us)
            .reference(&echo_closed.p50_us),
    );
    for (id, seconds) in &evaluation {
        rows.push(
            Row::new(
                format!(
                    "full evaluation of `{id}`, s per 1M profiles ({evaluated_profiles} profiles)"
                ),
                seconds,
            )
            .target("≤ 1 s", Check::AtMost(1.0)),
        );
    }
    rows.push(
        Row::new(
            "`CheckMembership` by email, 16 in flight, req/s (ref: echo)",
            &check_membership.per_second,
        )
        .target("≥ 0.60 × echo", Check::RatioAtLeast(0.60))
        .reference(&echo_closed.per_second),
    );
    rows.push(
        Row::new(
            "`CheckMembership` p99, µs (ref: echo p99)",
            &check_membership.p99_us,
        )
        .reference(&echo_closed.p99_us),
    );
    rows.push(
        Row::new(
            format!("server peak RSS (VmHWM), {profiles} live profiles, 20 segments, GiB"),
            &[peak_kib as f64 * 1024.0 / GIB],
        )
        .target("≤ 2 GiB", Check::AtMost(2.0)),
    );
    rows.push(
        Row::new(
            format!(
                "matched identify through `Ingest`, µs, at {loaded} profiles (ref: at {})",
                sizes.match_small
            ),
            &matching_large,
        )
        .target("≤ 2 × ref", Check::RatioAtMost(2.0))
        .reference(&matching_small),
    );
}

/// Metric 5, on a fresh server per run.
async fn privacy(sizes: &Sizes, rows: &mut Vec<Row>, rates: &mut Rates) {
    let mut runs = Vec::new();
    let mut items_per_second = Vec::new();
    for run in 1..=sizes.runs {
        let started = Instant::now();
        // On a fresh server: `cargo bench --bench privacy` measures the same
        // on a populated store.
        let figures =
            common::privacy::run(0, sizes.privacy_people, EVENTS_PER_PRIVACY_SUBJECT).await;
        println!(
            "run {run}: export p99 {:.1} ms, erasure p99 {:.1} ms",
            figures.export_p99_ms, figures.erase_p99_ms
        );
        items_per_second.push(
            (sizes.privacy_people * (EVENTS_PER_PRIVACY_SUBJECT + 1)) as f64
                / started.elapsed().as_secs_f64(),
        );
        runs.push(figures);
    }
    rates.privacy_items_per_second = median(&items_per_second);
    let pick = |figure: fn(&common::privacy::RunFigures) -> f64| {
        runs.iter().map(figure).collect::<Vec<_>>()
    };
    rows.push(
        Row::new(
            "subject export, 1,000 events, p99 ms",
            &pick(|figures| figures.export_p99_ms),
        )
        .target("≤ 20 ms", Check::AtMost(20.0)),
    );
    rows.push(
        Row::new(
            "subject erasure, 1,000 events, p99 ms",
            &pick(|figures| figures.erase_p99_ms),
        )
        .target("≤ 20 ms", Check::AtMost(20.0)),
    );
}
