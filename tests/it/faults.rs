//! The store over an engine that fails on purpose: commits that lose a race
//! with another writer, and a database that goes away and comes back.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sightline::config::{IdentityConfig, Limits};
use sightline::identity::{MergeRules, Normalizer};
use sightline::model::{ManualClock, UnixMillis};
use sightline::service::{ProfileLookup, ProfileService, RawIdentifier, ServiceError, TrackInput};
use sightline::store::engine::postgres::PostgresEngine;
use sightline::store::engine::sled::SledEngine;
use sightline::store::engine::{Batch, Durability, Engine, EngineError, Scan, Transaction};
use sightline::store::{NoSegments, ProfileStore, SledStore, SledStoreOptions};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Passes everything to the real engine, except that one commit in
/// `conflict_every` is rolled back and reported as a conflict, and that
/// while `away` is set every commit fails as if the database were gone.
struct FaultyEngine {
    inner: Arc<dyn Engine>,
    conflict_every: u64,
    commits: AtomicU64,
    conflicts_injected: AtomicU64,
    away: AtomicBool,
}

impl FaultyEngine {
    fn fault(&self) -> Option<EngineError> {
        if self.away.load(Ordering::SeqCst) {
            return Some(EngineError::Unavailable(
                "injected: the database went away".to_owned(),
            ));
        }
        let commit = self.commits.fetch_add(1, Ordering::SeqCst);
        if self.conflict_every > 0 && commit % self.conflict_every == self.conflict_every / 2 {
            self.conflicts_injected.fetch_add(1, Ordering::SeqCst);
            return Some(EngineError::Conflict("injected".to_owned()));
        }
        None
    }
}

struct FaultyTransaction<'e> {
    inner: Box<dyn Transaction + 'e>,
    engine: &'e FaultyEngine,
}

impl Transaction for FaultyTransaction<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(key)
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        self.inner.range(from, to)
    }

    fn commit(self: Box<Self>, batch: Batch) -> Result<Durability, EngineError> {
        match self.engine.fault() {
            // Dropped uncommitted: rolled back.
            Some(error) => Err(error),
            None => self.inner.commit(batch),
        }
    }
}

impl Engine for FaultyEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(key)
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        self.inner.range(from, to)
    }

    fn range_back(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        self.inner.range_back(from, to)
    }

    fn apply(&self, batch: Batch) -> Result<(), EngineError> {
        if self.away.load(Ordering::SeqCst) {
            return Err(EngineError::Unavailable("injected".to_owned()));
        }
        self.inner.apply(batch)
    }

    fn sync(&self) -> Result<Durability, EngineError> {
        self.inner.sync()
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        self.inner.size_on_disk()
    }

    fn begin(&self) -> Result<Box<dyn Transaction + '_>, EngineError> {
        Ok(Box::new(FaultyTransaction {
            inner: self.inner.begin()?,
            engine: self,
        }))
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }
}

struct Faulty {
    _data_dir: tempfile::TempDir,
    engine: Arc<FaultyEngine>,
    store: Arc<SledStore>,
    service: Arc<ProfileService>,
}

fn open_faulty(conflict_every: u64) -> Faulty {
    let data_dir = tempfile::tempdir().expect("data dir");
    let inner: Arc<dyn Engine> = match crate::support::database_url(data_dir.path()) {
        Some(url) => Arc::new(
            PostgresEngine::open(&sightline::store::PostgresOptions {
                url,
                read_connections: 2,
                statement_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(10),
                ca_file: None,
            })
            .expect("open PostgreSQL"),
        ),
        None => Arc::new(SledEngine::open(data_dir.path(), 16 << 20).expect("open sled")),
    };
    let engine = Arc::new(FaultyEngine {
        inner,
        conflict_every,
        commits: AtomicU64::new(0),
        conflicts_injected: AtomicU64::new(0),
        away: AtomicBool::new(false),
    });
    let identity = IdentityConfig {
        default_region: "GB".to_owned(),
        ..IdentityConfig::default()
    };
    let rules = MergeRules::new(&identity.merge, &identity.fuzzy);
    let options = SledStoreOptions {
        data_dir: data_dir.path().to_owned(),
        cache_capacity_bytes: 16 << 20,
        database: None,
        write_queue_depth: 64,
        group_commit_calls_max: 16,
        merge_rules: rules.clone(),
        suppression_key: None,
        recommendations: false,
        sealing: crate::support::sealing_options(data_dir.path()),
    };
    let store = Arc::new(
        SledStore::open_on_engine(engine.clone(), &options, Arc::new(NoSegments))
            .expect("open the store"),
    );
    let limits = Limits::default();
    let normalizer = Normalizer::new(&identity, limits.identifier_value_bytes_max);
    let clock = Arc::new(ManualClock::new(UnixMillis(1_700_000_000_000)));
    let service = Arc::new(ProfileService::new(
        store.clone(),
        normalizer,
        rules,
        limits,
        clock,
    ));
    Faulty {
        _data_dir: data_dir,
        engine,
        store,
        service,
    }
}

fn order(person: usize, message: usize) -> TrackInput {
    TrackInput {
        identifiers: vec![RawIdentifier {
            kind: "email".to_owned(),
            value: format!("buyer{person}@example.com"),
        }],
        event: "Order Completed".to_owned(),
        message_id: format!("order-{message}"),
        ..TrackInput::default()
    }
}

async fn send(service: &Arc<ProfileService>, input: TrackInput) -> Result<(), ServiceError> {
    let call = service.track_call(input)?;
    service.write(call).await.map(|_| ())
}

async fn events_of(service: &ProfileService, person: usize) -> Vec<String> {
    match service
        .get_profile(
            ProfileLookup::Identifier(RawIdentifier {
                kind: "email".to_owned(),
                value: format!("buyer{person}@example.com"),
            }),
            10_000,
        )
        .await
    {
        Ok(read) => read
            .profile
            .events
            .iter()
            .map(|event| event.provenance.message_id.clone())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_tenth_of_commits_in_conflict_every_acknowledged_write_is_stored_once() {
    const PEOPLE: usize = 20;
    const ORDERS: usize = 400;
    let faulty = open_faulty(10);
    let sends = (0..ORDERS).map(|message| {
        let service = faulty.service.clone();
        tokio::spawn(async move {
            let result = send(&service, order(message % PEOPLE, message)).await;
            (message, result.is_ok())
        })
    });
    let mut acknowledged = std::collections::BTreeSet::new();
    for sent in futures::future::join_all(sends).await {
        let (message, ok) = sent.expect("task");
        if ok {
            acknowledged.insert(message);
        }
    }
    assert!(
        faulty.engine.conflicts_injected.load(Ordering::SeqCst) > 0,
        "conflicts were injected"
    );
    assert!(faulty.store.stats().writer.groups_retried > 0);

    for person in 0..PEOPLE {
        let mut stored = events_of(&faulty.service, person).await;
        stored.sort();
        let mut expected: Vec<String> = acknowledged
            .iter()
            .filter(|message| *message % PEOPLE == person)
            .map(|message| format!("order-{message}"))
            .collect();
        expected.sort();
        // An unacknowledged call may have been stored (its answer lost), but
        // never twice, and nothing acknowledged is missing.
        let mut deduplicated = stored.clone();
        deduplicated.dedup();
        assert_eq!(deduplicated, stored, "buyer{person}: no event twice");
        for message in &expected {
            assert!(stored.contains(message), "buyer{person}: {message} lost");
        }
    }
    // Sending everything again stores nothing twice.
    for message in 0..ORDERS {
        let _ = send(&faulty.service, order(message % PEOPLE, message)).await;
    }
    let mut total = 0;
    for person in 0..PEOPLE {
        total += events_of(&faulty.service, person).await.len();
    }
    assert_eq!(
        total, ORDERS,
        "each order stored exactly once after resending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_refused_while_the_database_is_away_resume_by_themselves() {
    let faulty = open_faulty(0);
    let mut health = faulty.store.write_health();
    send(&faulty.service, order(1, 1))
        .await
        .expect("first order");
    assert!(health.borrow().is_none(), "writes succeed");

    faulty.engine.away.store(true, Ordering::SeqCst);
    let refused = send(&faulty.service, order(1, 2))
        .await
        .expect_err("refused while the database is away");
    assert!(
        matches!(refused, ServiceError::Unavailable(_)),
        "UNAVAILABLE, not {refused:?}"
    );
    assert!(
        !refused.to_string().contains("shutting down"),
        "the refusal says why: {refused}"
    );
    let reason = health.borrow_and_update().clone();
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("went away")),
        "health says why writes fail: {reason:?}"
    );
    assert_eq!(
        events_of(&faulty.service, 1).await,
        vec!["order-1"],
        "reads go on"
    );

    faulty.engine.away.store(false, Ordering::SeqCst);
    // No write is needed: the writer's probe finds the database back.
    tokio::time::timeout(Duration::from_secs(10), async {
        while health.borrow_and_update().is_some() {
            health.changed().await.expect("health channel");
        }
    })
    .await
    .expect("health recovers by itself");
    send(&faulty.service, order(1, 3))
        .await
        .expect("writes resume");
    assert_eq!(
        events_of(&faulty.service, 1).await,
        vec!["order-1", "order-3"]
    );
}

async fn health_of(server: &crate::support::TestServer) -> ServingStatus {
    let mut health = HealthClient::new(server.channel().await);
    match health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(response) => response.into_inner().status(),
        Err(_) => ServingStatus::Unknown,
    }
}

async fn wait_for_health(server: &crate::support::TestServer, wanted: ServingStatus) {
    for _ in 0..300 {
        if health_of(server).await == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health never turned {wanted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restarted_mid_run_refuses_writes_meanwhile_and_the_server_recovers() {
    use crate::support::{PrivateCluster, TestServer, email, get_by, identify, test_config};
    let Some(cluster) = tokio::task::block_in_place(PrivateCluster::start) else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut config = test_config(&data_dir);
    config.storage.url = Some(cluster.url());
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    client
        .identify(identify(vec![email("before@example.com")]))
        .await
        .expect("written before the database stops");
    assert_eq!(health_of(&server).await, ServingStatus::Serving);

    tokio::task::block_in_place(|| cluster.stop());
    let refused = client
        .identify(identify(vec![email("meanwhile@example.com")]))
        .await
        .expect_err("refused while the database is down");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    wait_for_health(&server, ServingStatus::NotServing).await;

    tokio::task::block_in_place(|| cluster.restart());
    // No restart of the server, and no write needed to notice.
    wait_for_health(&server, ServingStatus::Serving).await;
    client
        .identify(identify(vec![email("after@example.com")]))
        .await
        .expect("written once the database is back");
    for who in ["before@example.com", "after@example.com"] {
        get_by(&mut client, email(who)).await.expect(who);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_writes_fail_still_stops_when_asked() {
    let faulty = open_faulty(0);
    faulty.engine.away.store(true, Ordering::SeqCst);
    send(&faulty.service, order(1, 1))
        .await
        .expect_err("refused while the database is away");
    let store = faulty.store.clone();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || store.close()),
    )
    .await
    .expect("the stop is not held up by the failing writes");
    closed.expect("close task").expect("close");
}

/// A small file system of the test's own (tmpfs, so root only); `None`
/// where mounting is not allowed.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        mounted.then_some(SmallDisk { dir })
    }

    /// Fills what is left of the disk; the file is removed to free it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 1 << 20];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..4096]).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_writes_are_refused_and_resume_by_themselves_once_space_is_freed() {
    use crate::support::{TestServer, email, get_by, identify, test_config};
    if crate::support::postgres_server().is_some() {
        return; // The database's disk is the database's.
    }
    let Some(disk) = SmallDisk::mount(64) else {
        eprintln!("full-disk test skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data_dir = tempfile::tempdir_in(disk.dir.path()).expect("data dir");
    let mut config = test_config(&data_dir);
    config.storage.cache_capacity_bytes = 8 << 20;
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    client
        .identify(identify(vec![email("before@example.com")]))
        .await
        .expect("written while there is space");

    let filler = tokio::task::block_in_place(|| disk.fill());
    let mut refused = None;
    // sled buffers in memory; writes fail once its log cannot grow.
    for attempt in 0..2_000 {
        match client
            .identify(identify(vec![email(&format!("fill{attempt}@example.com"))]))
            .await
        {
            Ok(_) => continue,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("writes are refused on a full disk");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        !refused.message().contains("shutting down"),
        "says why: {}",
        refused.message()
    );
    wait_for_health(&server, ServingStatus::NotServing).await;
    // Reads are served from what sled holds; sled writes while it reads
    // (merging a page's fragments) and refuses to after an I/O error, so a
    // read may be refused too: then UNAVAILABLE, never INTERNAL or wrong.
    for _ in 0..20 {
        match get_by(&mut client, email("before@example.com")).await {
            Ok(profile) => assert_eq!(profile.identifiers.len(), 1),
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        }
    }

    std::fs::remove_file(filler).expect("free the space");
    wait_for_health(&server, ServingStatus::Serving).await;
    client
        .identify(identify(vec![email("after@example.com")]))
        .await
        .expect("writes resume by themselves");
    let data_dir = server.stop().await;
    let server = TestServer::start_in(data_dir).await;
    let mut client = server.client().await;
    for who in ["before@example.com", "after@example.com"] {
        get_by(&mut client, email(who)).await.expect(who);
    }
    drop(client);
    drop(server.stop().await);
}
