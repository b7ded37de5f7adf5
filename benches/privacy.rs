//! Subject export and erasure latency for people with many events, against
//! the release binary. Design target: p99 ≤ 20 ms each at 1,000 events.
//!
//! `cargo bench --bench privacy`; `BENCH_PEOPLE` (default 50) people with
//! `BENCH_EVENTS` (default 1000) events each, `BENCH_RUNS` (default 3) runs
//! on fresh servers, each first populated with `BENCH_POPULATION` (default
//! 100000; the design's figure is at 1000000) matched profiles, a tenth of
//! them with a near-twin, and every other resulting candidate rejected.
//! Requests go one at a time: the latency of one request, not of a queue.

mod common;

use common::env_number;
use common::measure::spread;
use common::privacy::{RunFigures, run};

/// Reads one figure of a run.
type Pick = fn(&RunFigures) -> f64;

fn main() {
    let people = env_number("BENCH_PEOPLE", 50);
    let events = env_number("BENCH_EVENTS", 1000);
    let runs = env_number("BENCH_RUNS", 3).max(1);
    let population = env_number("BENCH_POPULATION", 100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let figures: Vec<RunFigures> = (0..runs)
        .map(|_| runtime.block_on(run(population, people, events)))
        .collect();
    println!(
        "subject export / erasure: {people} people × {events} events, {runs} runs, \
         on {population} profiles and their twins"
    );
    for (run, figures) in figures.iter().enumerate() {
        println!(
            "run {}: {} candidates pending, {} rejections",
            run + 1,
            figures.candidates,
            figures.rejections
        );
        let slowest: Vec<String> = figures
            .slowest_exports
            .iter()
            .map(|(request, ms)| format!("#{request} {ms:.1} ms"))
            .collect();
        println!("  slowest exports: {}", slowest.join(", "));
    }
    println!("metric | median | min–max | target");
    let rows: [(&str, Pick); 4] = [
        ("export p50 (ms)", |f| f.export_p50_ms),
        ("export p99 (ms)", |f| f.export_p99_ms),
        ("erasure p50 (ms)", |f| f.erase_p50_ms),
        ("erasure p99 (ms)", |f| f.erase_p99_ms),
    ];
    for (name, pick) in rows {
        let figure = spread(&figures.iter().map(pick).collect::<Vec<_>>());
        let target = if name.contains("p99") { "≤ 20" } else { "" };
        println!(
            "{name} | {:.2} | {:.2}–{:.2} | {target}",
            figure.median, figure.min, figure.max
        );
    }
    let largest = figures.iter().map(|f| f.export_bytes).max().unwrap_or(0);
    println!("largest export document: {largest} bytes");
}
