//! How figures are taken (closed and open loops over real connections,
//! HDR histograms) and how they are reported (median and spread over runs,
//! one Markdown table with each figure beside its reference).

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::channel;

/// Calls in flight for the closed-loop figures of design 9.
pub const CALLS_IN_FLIGHT: usize = 16;
pub const WARM_UP: Duration = Duration::from_secs(1);

/// One kind of call under measurement. `sequence` numbers the calls of a
/// loop, so that each can pick its own person or pair deterministically.
pub trait Caller: Clone + Send + 'static {
    fn call(&mut self, sequence: u64) -> impl Future<Output = ()> + Send;
}

#[derive(Clone, Copy, Debug)]
pub struct LoopFigures {
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("histogram")
}

fn figures(histogram: &Histogram<u64>, seconds: f64) -> LoopFigures {
    LoopFigures {
        per_second: histogram.len() as f64 / seconds,
        p50_us: histogram.value_at_quantile(0.50) as f64,
        p99_us: histogram.value_at_quantile(0.99) as f64,
    }
}

/// `CALLS_IN_FLIGHT` workers, one connection each, as independent callers
/// would be; latencies recorded after a warm-up.
pub async fn closed_loop<C: Caller>(
    port: u16,
    seconds: u64,
    caller: impl Fn(Channel) -> C,
) -> LoopFigures {
    let mut connections = Vec::new();
    for _ in 0..CALLS_IN_FLIGHT {
        connections.push(caller(channel(port).await));
    }
    closed_loop_over(connections, seconds).await
}

/// One worker per caller, each with its own connection, calling back to
/// back; latencies recorded after a warm-up.
pub async fn closed_loop_over<C: Caller>(connections: Vec<C>, seconds: u64) -> LoopFigures {
    let warm_until = Instant::now() + WARM_UP;
    let measure_until = warm_until + Duration::from_secs(seconds);
    let mut workers = JoinSet::new();
    for (worker, mut caller) in connections.into_iter().enumerate() {
        workers.spawn(async move {
            let mut histogram = histogram();
            // Disjoint sequence numbers per worker.
            let mut sequence = (worker as u64) << 40;
            loop {
                let started = Instant::now();
                if started >= measure_until {
                    break;
                }
                caller.call(sequence).await;
                sequence += 1;
                if started >= warm_until {
                    histogram
                        .record(started.elapsed().as_micros() as u64)
                        .expect("record");
                }
            }
            histogram
        });
    }
    let mut total = histogram();
    while let Some(worker) = workers.join_next().await {
        total.add(worker.expect("worker")).expect("merge");
    }
    figures(&total, seconds as f64)
}

/// Calls sent at a fixed rate whatever the answers do, latency counted
/// from each call's scheduled send time, so that a stall shows in every
/// call it delays (no coordinated omission). Sequences `0..` are used,
/// warm-up included; returns the figures and the number of calls made.
pub async fn open_loop<C: Caller>(
    port: u16,
    per_second: u64,
    seconds: u64,
    caller: impl Fn(Channel) -> C,
) -> (LoopFigures, u64) {
    let mut connections = Vec::new();
    for _ in 0..CALLS_IN_FLIGHT {
        connections.push(caller(channel(port).await));
    }
    let interval = Duration::from_secs_f64(1.0 / per_second as f64);
    let warm_up_calls = (WARM_UP.as_secs_f64() * per_second as f64) as u64;
    let calls = warm_up_calls + seconds * per_second;
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut in_flight = JoinSet::new();
    for sequence in 0..calls {
        let scheduled = start + interval * sequence as u32;
        tokio::time::sleep_until(scheduled).await;
        let mut caller = connections[sequence as usize % connections.len()].clone();
        in_flight.spawn(async move {
            caller.call(sequence).await;
            (sequence >= warm_up_calls).then(|| scheduled.elapsed().as_micros() as u64)
        });
    }
    let mut total = histogram();
    while let Some(latency) = in_flight.join_next().await {
        if let Some(latency) = latency.expect("call") {
            total.record(latency).expect("record");
        }
    }
    (figures(&total, seconds as f64), calls)
}

/// Median, minimum and maximum over runs.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Spread {
    assert!(!values.is_empty(), "a figure needs at least one run");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Spread {
        median: sorted[sorted.len() / 2],
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    }
}

pub fn median(values: &[f64]) -> f64 {
    spread(values).median
}

/// How a figure is judged against design 9.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// Measured ÷ reference at least this.
    RatioAtLeast(f64),
    /// Measured ÷ reference at most this.
    RatioAtMost(f64),
    /// Measured (in the row's unit) at most this.
    AtMost(f64),
    /// Shown for context, not judged.
    Context,
}

pub struct Row {
    pub metric: String,
    pub target: String,
    pub check: Check,
    pub value: Spread,
    pub reference: Option<f64>,
}

impl Row {
    pub fn new(metric: impl Into<String>, values: &[f64]) -> Self {
        Self {
            metric: metric.into(),
            target: String::new(),
            check: Check::Context,
            value: spread(values),
            reference: None,
        }
    }

    pub fn target(mut self, target: impl Into<String>, check: Check) -> Self {
        self.target = target.into();
        self.check = check;
        self
    }

    /// The median of the reference's runs.
    pub fn reference(mut self, values: &[f64]) -> Self {
        self.reference = Some(median(values));
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.reference
            .map(|reference| self.value.median / reference)
    }

    fn verdict(&self) -> &'static str {
        let met = match (self.check, self.ratio()) {
            (Check::RatioAtLeast(least), Some(ratio)) => ratio >= least,
            (Check::RatioAtMost(most), Some(ratio)) => ratio <= most,
            (Check::AtMost(most), _) => self.value.median <= most,
            _ => return "",
        };
        if met { "met" } else { "**missed**" }
    }
}

pub fn figure(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| metric | target | measured median | min–max | reference (median) | ratio | verdict |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {}–{} | {} | {} | {} |",
            row.metric,
            row.target,
            figure(row.value.median),
            figure(row.value.min),
            figure(row.value.max),
            row.reference.map(figure).unwrap_or_default(),
            row.ratio()
                .map(|ratio| format!("{ratio:.2}"))
                .unwrap_or_default(),
            row.verdict()
        );
    }
}
