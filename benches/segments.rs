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

use std::time::Instant;

use common::calls::CheckMembership;
use common::echo::{HealthCheck, serve_if_echo, start_echo};
use common::measure::{CALLS_IN_FLIGHT, Check, Row, closed_loop, print_table};
use common::population::{
    ACTIVE_GOLD, NEAR_LONDON, OTHER_SEGMENTS, define, define_afresh, load_disk_shape, load_simple,
    unix_seconds_now,
};
use common::{Server, channel, directory_bytes, env_number, memory_kib, start_server};

use sightline::api::pb::segment_service_client::SegmentServiceClient;

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
            let (elapsed, members) = define_afresh(&mut segments, id, rule).await;
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
        rows.push(
            Row::new(
                format!("full evaluation `{id}`, s per 1M profiles"),
                &normalised,
            )
            .target("≤ 1 s", Check::AtMost(1.0)),
        );
        let rates: Vec<f64> = seconds.iter().map(|s| people as f64 / s).collect();
        rows.push(Row::new(
            format!("full evaluation `{id}`, profiles/s"),
            &rates,
        ));
    }

    let (peak_kib, resident_kib) = memory_kib(server.pid());
    let gib = |kib: u64| kib as f64 / (1024.0 * 1024.0);
    println!(
        "server memory with {people} profiles and 20 segments: peak {:.2} GiB, now {:.2} GiB",
        gib(peak_kib),
        gib(resident_kib)
    );
    rows.push(
        Row::new(
            format!("server peak RSS (VmHWM), {people} profiles, 20 segments, GiB"),
            &[gib(peak_kib)],
        )
        .target("≤ 2 GiB", Check::AtMost(2.0)),
    );
    let disk_bytes = directory_bytes(server.data_dir());
    println!(
        "data dir: {:.1} MiB, {:.0} bytes per profile",
        disk_bytes as f64 / (1024.0 * 1024.0),
        disk_bytes as f64 / people as f64
    );
    rows.push(Row::new(
        format!("disk per profile, part 1 population ({people}), bytes"),
        &[disk_bytes as f64 / people as f64],
    ));

    let echo = start_echo();
    let (mut echo_rates, mut echo_p50, mut echo_p99) = (vec![], vec![], vec![]);
    let (mut check_rates, mut check_p50, mut check_p99) = (vec![], vec![], vec![]);
    let mut health_rates = vec![];
    for run in 1..=runs {
        let reference = closed_loop(echo.port, read_seconds, HealthCheck::new).await;
        let check = closed_loop(server.port, read_seconds, |channel| {
            CheckMembership::new(channel, people)
        })
        .await;
        let health = closed_loop(server.port, read_seconds, HealthCheck::new).await;
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
        echo_p50.push(reference.p50_us);
        echo_p99.push(reference.p99_us);
        check_rates.push(check.per_second);
        check_p50.push(check.p50_us);
        check_p99.push(check.p99_us);
        health_rates.push(health.per_second);
    }
    rows.push(
        Row::new(
            "`CheckMembership` by email, 16 in flight, req/s (ref: echo)",
            &check_rates,
        )
        .target("≥ 0.60 × echo", Check::RatioAtLeast(0.60))
        .reference(&echo_rates),
    );
    rows.push(Row::new("`CheckMembership` p50, µs (ref: echo)", &check_p50).reference(&echo_p50));
    rows.push(Row::new("`CheckMembership` p99, µs (ref: echo)", &check_p99).reference(&echo_p99));
    rows.push(
        Row::new(
            "`Health/Check` on the Sightline server, req/s (ref: echo)",
            &health_rates,
        )
        .reference(&echo_rates),
    );
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
    rows.push(
        Row::new(
            "durable ingest, 20 segments, items/s (ref: no segments)",
            &with,
        )
        .reference(&without),
    );
}

/// Part 4: the design's per-profile shape, no segments.
async fn disk_per_profile(people: u64, rows: &mut Vec<Row>) {
    let server = start_server();
    let started = Instant::now();
    let accepted = load_disk_shape(server.port, people, unix_seconds_now())
        .await
        .items();
    let bytes = directory_bytes(server.data_dir());
    println!(
        "disk shape: {people} people x (5 identifiers, 10 traits, 20 events), {accepted} items in {:.0} s; data dir {:.1} MiB, {:.0} bytes per profile",
        started.elapsed().as_secs_f64(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / people as f64
    );
    rows.push(
        Row::new(
            format!("disk per profile, 5 ids + 10 traits + 20 events ({people} people), bytes"),
            &[bytes as f64 / people as f64],
        )
        .target("≤ 3072", Check::AtMost(3072.0)),
    );
}

fn main() {
    if serve_if_echo() {
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
