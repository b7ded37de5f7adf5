//! The PostgreSQL engine beside raw PostgreSQL on the same server, in one
//! run: `scripts/with-postgres cargo bench --bench postgres` (a throwaway
//! cluster), or `BENCH_POSTGRES_URL=postgres://… cargo bench --bench
//! postgres` against a server whose role may create databases.
//!
//! Per run, each on a database of its own:
//! 1. one server: durable ingest of `BENCH_INGEST_PROFILES` people of the
//!    disk shape (5 identifiers, 10 traits, 20 events each), then
//!    `GetProfile` at 16 in flight for `BENCH_READ_SECONDS`, then merging
//!    `Identify` calls at `BENCH_MERGE_RATE`/s for `BENCH_MERGE_SECONDS`;
//! 2. the raw reference: batches of 1,000 inserts of rows the size of the
//!    event records the server stored, one `COMMIT` each, then point
//!    `SELECT`s by primary key at 16 in flight;
//! 3. two servers on one database, each ingesting half of the people (few
//!    merges): throughput together, and their retry rate.
//!
//! `BENCH_QUICK=1` gives small sizes; `BENCH_RUNS` (3, quick 1).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::calls::{GetProfile, IdentifyMerge};
use common::measure::{CALLS_IN_FLIGHT, Check, Row, WARM_UP, closed_loop, open_loop, print_table};
use common::population::{
    full_events, full_identify, load_disk_shape, load_people, load_range, pair_halves,
    unix_seconds_now,
};
use common::{env_number, free_port, start_server_with};
use tokio_postgres::NoTls;

const RAW_BATCH: usize = 1_000;

struct Sizes {
    runs: u64,
    profiles: u64,
    read_seconds: u64,
    merge_seconds: u64,
    merge_rate: u64,
    raw_inserts: u64,
}

impl Sizes {
    fn from_environment() -> Self {
        let quick = env_number("BENCH_QUICK", 0) != 0;
        let size = |name: &str, default: u64, quick_default: u64| {
            env_number(name, if quick { quick_default } else { default })
        };
        Self {
            runs: size("BENCH_RUNS", 3, 1).max(1),
            profiles: size("BENCH_INGEST_PROFILES", 2_000, 300).max(2),
            read_seconds: size("BENCH_READ_SECONDS", 5, 2).max(1),
            merge_seconds: size("BENCH_MERGE_SECONDS", 5, 2).max(1),
            merge_rate: size("BENCH_MERGE_RATE", 1_000, 1_000).max(1),
            raw_inserts: size("BENCH_PG_INSERTS", 100_000, 20_000).max(RAW_BATCH as u64),
        }
    }
}

/// A database of its own for each measurement, dropped afterwards.
struct Database {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl Database {
    async fn create(server: &str, name: String) -> Database {
        let admin = connect(server).await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
        let url = format!("{base}/{name}");
        Database { admin, name, url }
    }

    async fn drop_now(self) {
        let _ = self
            .admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

async fn scrape(port: u16, series: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("scrape");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("scrape");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

fn serve_on(url: &str) -> (common::Server, u16) {
    let metrics = free_port();
    let server = start_server_with(&[
        "--store".to_owned(),
        url.to_owned(),
        "--metrics-listen".to_owned(),
        format!("127.0.0.1:{metrics}"),
        "--config".to_owned(),
        shared_master_key_config().display().to_string(),
    ]);
    (server, metrics)
}

/// A configuration naming one master key for every server of the run:
/// servers sharing a database must open its key store with the same key.
fn shared_master_key_config() -> &'static std::path::Path {
    static CONFIG: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    let (_, path) = CONFIG.get_or_init(|| {
        let dir = tempfile::tempdir().expect("config dir");
        let key = dir.path().join("master.key");
        std::fs::write(
            &key,
            sightline::store::sealing::cipher::SecretKey::random().to_hex(),
        )
        .expect("master key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("master key private");
        let path = dir.path().join("sightline.toml");
        std::fs::write(
            &path,
            format!(
                "[privacy]\nmaster_key_file = {:?}\n",
                key.display().to_string()
            ),
        )
        .expect("config");
        (dir, path)
    });
    path
}

/// Key and value sizes of the event records the server stored.
async fn event_sizes(url: &str) -> (usize, usize) {
    let client = connect(url).await;
    let row = client
        .query_one(
            "SELECT avg(length(key))::FLOAT8, avg(length(value))::FLOAT8 FROM sightline_kv \
             WHERE key >= 'e'::BYTEA AND key < 'f'::BYTEA",
            &[],
        )
        .await
        .expect("event sizes");
    let size = |column: usize| row.get::<_, Option<f64>>(column).unwrap_or(100.0) as usize;
    (size(0), size(1))
}

struct Raw {
    inserts_per_second: f64,
    selects_per_second: f64,
}

async fn raw_reference(url: &str, key_bytes: usize, value_bytes: usize, sizes: &Sizes) -> Raw {
    let client = connect(url).await;
    client
        .batch_execute("CREATE TABLE raw (key BYTEA PRIMARY KEY, value BYTEA NOT NULL)")
        .await
        .expect("table");
    let insert = client
        .prepare("INSERT INTO raw (key, value) SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[])")
        .await
        .expect("prepare");
    let key_of = move |n: u64| {
        let mut key = vec![b'e'; key_bytes.max(9)];
        let at = key.len() - 8;
        key[at..].copy_from_slice(&common::population::mix(n).to_be_bytes());
        key
    };
    let started = Instant::now();
    let mut n = 0u64;
    while n < sizes.raw_inserts {
        let keys: Vec<Vec<u8>> = (n..n + RAW_BATCH as u64).map(key_of).collect();
        let values: Vec<Vec<u8>> = keys.iter().map(|_| vec![7u8; value_bytes]).collect();
        client
            .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .await
            .expect("begin");
        client
            .execute(&insert, &[&keys, &values])
            .await
            .expect("insert");
        client.batch_execute("COMMIT").await.expect("commit");
        n += RAW_BATCH as u64;
    }
    let inserts_per_second = n as f64 / started.elapsed().as_secs_f64();

    let stored = n;
    let mut workers = Vec::new();
    let until = Instant::now() + WARM_UP + Duration::from_secs(sizes.read_seconds);
    let counted_from = Instant::now() + WARM_UP;
    for worker in 0..CALLS_IN_FLIGHT as u64 {
        let client = Arc::new(connect(url).await);
        workers.push(tokio::spawn(async move {
            let select = client
                .prepare("SELECT value FROM raw WHERE key = $1")
                .await
                .expect("prepare");
            let mut counted = 0u64;
            let mut sequence = worker << 40;
            while Instant::now() < until {
                let key = key_of(common::population::mix(sequence) % stored);
                client.query_opt(&select, &[&key]).await.expect("select");
                sequence += 1;
                if Instant::now() >= counted_from {
                    counted += 1;
                }
            }
            counted
        }));
    }
    let mut selects = 0;
    for worker in workers {
        selects += worker.await.expect("worker");
    }
    Raw {
        inserts_per_second,
        selects_per_second: selects as f64 / sizes.read_seconds as f64,
    }
}

#[tokio::main]
async fn main() {
    let Ok(server_url) = std::env::var("BENCH_POSTGRES_URL") else {
        println!(
            "BENCH_POSTGRES_URL is not set: run `scripts/with-postgres cargo bench --bench postgres`"
        );
        return;
    };
    let sizes = Sizes::from_environment();
    println!("## PostgreSQL engine benchmark\n");
    println!(
        "- {} run(s); {} people of the disk shape; reads {} s at {CALLS_IN_FLIGHT} in flight; merges {} s at {}/s; raw reference {} inserts in batches of {RAW_BATCH}\n",
        sizes.runs,
        sizes.profiles,
        sizes.read_seconds,
        sizes.merge_seconds,
        sizes.merge_rate,
        sizes.raw_inserts
    );
    let tag = std::process::id();
    let (mut ingest, mut raw_inserts, mut reads, mut raw_selects, mut merge_p99) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut one_server, mut two_servers, mut retry_rates) = (vec![], vec![], vec![]);
    let mut merge_refusals = vec![];
    for run in 1..=sizes.runs {
        let database = Database::create(&server_url, format!("bench_{tag}_{run}_one")).await;
        let (server, metrics) = serve_on(&database.url);
        let loaded = load_disk_shape(server.port, sizes.profiles, unix_seconds_now()).await;
        let people = sizes.profiles;
        let get = closed_loop(server.port, sizes.read_seconds, |channel| {
            GetProfile::new(channel, people)
        })
        .await;
        let pairs = sizes.merge_rate * (sizes.merge_seconds + 1);
        load_range(server.port, 0..pairs, pair_halves).await;
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (merges, merge_calls) = open_loop(
            server.port,
            sizes.merge_rate,
            sizes.merge_seconds,
            |channel| IdentifyMerge::counting_refusals(channel, 0, refused.clone()),
        )
        .await;
        let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
        let retries = scrape(metrics, "sightline_write_group_retries_total").await;
        drop(server);
        let (key_bytes, value_bytes) = event_sizes(&database.url).await;
        database.drop_now().await;

        let database = Database::create(&server_url, format!("bench_{tag}_{run}_raw")).await;
        let raw = raw_reference(&database.url, key_bytes, value_bytes, &sizes).await;
        database.drop_now().await;
        println!(
            "run {run}: ingest {:.0} events/s (raw {:.0} inserts/s, events {key_bytes} B + {value_bytes} B); GetProfile x{CALLS_IN_FLIGHT} {:.0}/s p99 {:.0} us (raw selects {:.0}/s); merges at {}/s p99 {:.0} us ({refused} of {merge_calls} refused); {retries} retries",
            loaded.events_per_second(),
            raw.inserts_per_second,
            get.per_second,
            get.p99_us,
            raw.selects_per_second,
            sizes.merge_rate,
            merges.p99_us
        );
        ingest.push(loaded.events_per_second());
        raw_inserts.push(raw.inserts_per_second);
        reads.push(get.per_second);
        raw_selects.push(raw.selects_per_second);
        merge_p99.push(merges.p99_us / 1000.0);
        merge_refusals.push(refused as f64 / merge_calls.max(1) as f64);
        one_server.push(loaded.items_per_second());

        // Two servers, half of the people each.
        let database = Database::create(&server_url, format!("bench_{tag}_{run}_two")).await;
        let (first, first_metrics) = serve_on(&database.url);
        let (second, second_metrics) = serve_on(&database.url);
        let now = unix_seconds_now();
        let half = sizes.profiles / 2;
        let started = Instant::now();
        let (a, b) = tokio::join!(
            load_people(first.port, 0..half, full_identify, move |person| {
                full_events(person, now)
            }),
            load_people(
                second.port,
                half..sizes.profiles,
                full_identify,
                move |person| { full_events(person, now) }
            ),
        );
        let together = (a.items() + b.items()) as f64 / started.elapsed().as_secs_f64();
        let mut retries = 0.0;
        let mut groups = 0.0;
        for port in [first_metrics, second_metrics] {
            retries += scrape(port, "sightline_write_group_retries_total").await;
            groups += scrape(port, "sightline_write_groups_total").await;
        }
        drop((first, second));
        database.drop_now().await;
        let retry_rate = if groups > 0.0 { retries / groups } else { 0.0 };
        println!(
            "run {run}: two servers {together:.0} items/s together, one server {:.0} items/s; {retries} retries over {groups} groups",
            loaded.items_per_second()
        );
        two_servers.push(together);
        retry_rates.push(retry_rate);
    }
    print_table(&[
        Row::new("durable ingest, events/s (PostgreSQL engine)", &ingest)
            .reference(&raw_inserts)
            .target("≥ 0.30 of raw batched inserts", Check::RatioAtLeast(0.30)),
        Row::new("GetProfile at 16 in flight, req/s", &reads)
            .reference(&raw_selects)
            .target("≥ 0.50 of raw point selects", Check::RatioAtLeast(0.50)),
        Row::new("Identify merges at 1,000/s, p99 ms", &merge_p99)
            .target("≤ 10 ms", Check::AtMost(10.0)),
        Row::new(
            "Identify merges at 1,000/s, share refused (overloaded)",
            &merge_refusals,
        ),
        Row::new("ingest, two servers on one database, items/s", &two_servers)
            .reference(&one_server),
        Row::new("retries per group, two servers", &retry_rates),
    ]);
}
