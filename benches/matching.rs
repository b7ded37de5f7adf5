//! Fuzzy matching stays near-linear: the time per identify (with names,
//! birthday and postal code, so every call is matched online) at a small
//! and at a large population. Run with `cargo bench --bench matching`;
//! `BENCH_MATCH_SIZES` (default `10000,1000000`) sets the populations and
//! `BENCH_PROBE` (default 5000) the identifies timed at each size, three
//! times, median reported. `BENCH_SERVER_CONFIG` names a server config file.

mod common;

use common::measure::median;
use common::population::{load_range, matched_identify};
use common::{env_number, start_server};

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
        let seconds = runtime.block_on(load_range(
            server.port,
            loaded..size.max(loaded),
            |person| [matched_identify(person)],
        ));
        println!("loaded {} → {size} profiles in {seconds:.1} s", loaded);
        loaded = size.max(loaded);
        let mut runs = Vec::new();
        for _ in 0..3 {
            let seconds =
                runtime.block_on(load_range(server.port, loaded..loaded + probe, |person| {
                    [matched_identify(person)]
                }));
            loaded += probe;
            runs.push(seconds * 1e6 / probe as f64);
        }
        let median_us = median(&runs);
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
