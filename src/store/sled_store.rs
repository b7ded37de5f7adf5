use std::ops::Bound;
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, mpsc as std_mpsc},
    thread::JoinHandle,
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use tokio::sync::{mpsc, oneshot};

use super::apply::{apply_unmerge, recompute_custom_traits};
use super::backup::{self, BackupReport, RestoreReport};
use super::consent;
use super::counters::{Counters, FIRST_COUNTER_VALUE, decode_counter};
use super::custom_traits;
use super::engine::postgres::{PostgresEngine, PostgresOptions};
use super::engine::sled::SledEngine;
use super::engine::{Batch, Engine, EngineError, Found, KeyValue, Read};
use super::feed::{self, FeedWriter, Follower, WakeWriter};
use super::job::JobContext;
use super::keys::IndexKeys;
use super::ledger::{self, PrivacyLedger, ReplayReport};
use super::match_training;
use super::matching;
use super::membership::{self, MembershipIndex, NoSegments, SegmentDraft, SegmentMembers};
use super::messages;
use super::overlay::SparseKeys;
use super::privacy;
use super::products::{self, ProductUpload, SharedRecommender};
use super::profiles::decode_profile_id;
use super::recheck;
use super::records::{
    AccessRecord, CandidateRecord, EventRecord, ProfileRecord, RfmRecord, decode,
};
use super::sealing::cipher::SecretKey;
use super::sealing::key_store::{
    EngineKeys, KEY_ROW, KeyStore, KeyStoreError, SlotFile, create_private, rotate_engine_keys,
    rotate_slot_file, sync_parent,
};
use super::sealing::master::{GENERATED_MASTER_KEY_FILE, MasterKeySource};
use super::sealing::{SealedEngine, Sealer};
use super::stats::{StoreStats, WriterStats};
use super::writer::{Command, Writer, job};
use super::{ApplyResults, LiveMemberships, ProfileStore, Shopper, StoreError, keys};
use crate::computed::custom::CustomTraitDefinition;
use crate::computed::{Activity, RankKey, RfmQuintiles};
use crate::identity::MergeRules;
use crate::identity::fuzzy::{MatchModel, estimate};
use crate::model::{
    AccessEntry, CandidateReview, Clock, ConsentCall, ErasureCall, ErasureOutcome, Identifier,
    MatchCandidate, MatchEvidence, MatchPassOutcome, MembershipChange, MembershipRules,
    PrivacyRequest, ProfileFacts, ProfileId, ProfileView, ReviewOutcome, SegmentDefinition,
    SegmentScope, SystemClock, UnixMillis, UnmergeCall, UnmergeOutcome, WriteCall,
};
use prost::Message;

/// How to open the sled store. Passed explicitly rather than relying on
/// sled's defaults.
#[derive(Debug, Clone)]
pub struct SledStoreOptions {
    pub data_dir: PathBuf,
    pub cache_capacity_bytes: u64,
    /// Keep the data in this PostgreSQL-wire database instead of sled's
    /// files under `data_dir`.
    pub database: Option<PostgresOptions>,
    pub write_queue_depth: usize,
    pub group_commit_calls_max: usize,
    pub merge_rules: MergeRules,
    /// The secret behind suppression tags; `None` uses one generated at
    /// first start and kept in the database.
    pub suppression_key: Option<Vec<u8>>,
    /// Keep product histories, the catalogue and the recommendation
    /// counts.
    pub recommendations: bool,
    pub sealing: SealingOptions,
}

/// The data key file's name in the data directory, by default.
pub const KEY_STORE_FILE: &str = "keys";

/// How values are sealed at rest (see `store::sealing`).
#[derive(Debug, Clone)]
pub struct SealingOptions {
    pub master_key: MasterKeySource,
    /// The embedded engine's slot file of data keys.
    pub key_store_file: PathBuf,
    /// Off only in benchmarks that measure what sealing costs; index keys
    /// are keyed hashes either way.
    pub seal_values: bool,
}

/// A profile read races at most with merges that keep moving it; each retry
/// follows one more alias.
const READ_ATTEMPTS_MAX: usize = 4;

/// The embedded default store: one sled tree with prefixed keys.
pub struct SledStore {
    /// Seals and opens values on their way to and from `raw`.
    engine: Arc<dyn Engine>,
    /// What is on disk: sealed values, for backups.
    raw: Arc<dyn Engine>,
    /// How index keys made of personal values are hashed.
    index: IndexKeys,
    memberships: Arc<MembershipIndex>,
    recommender: SharedRecommender,
    queue: mpsc::Sender<Command>,
    writer_stats: Arc<WriterStats>,
    /// Taken by `close`, which waits for the writer to finish its queue.
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Shares the model with the writer, which decides with it.
    rules: MergeRules,
    /// Asks the estimator thread for an estimate now, or to stop.
    estimator: Mutex<Option<(std_mpsc::Sender<EstimatorCommand>, JoinHandle<()>)>>,
    /// On a shared database: the thread reading what other servers
    /// changed (`store::feed`), stopped by a send or a drop.
    follower: Mutex<Option<(std_mpsc::Sender<()>, JoinHandle<()>)>>,
}

/// What the estimator thread is asked to do.
enum EstimatorCommand {
    Estimate {
        at: UnixMillis,
        reply: oneshot::Sender<Result<MatchModel, StoreError>>,
    },
    Stop,
}

/// How often the estimator thread looks whether matching asked for a new
/// estimate: often enough to follow a bulk load's doublings.
const ESTIMATE_POLL_INTERVAL_MS: u64 = 200;
/// Profiles matched again after one estimate; the rest wait for the next.
const RECHECKED_PER_ESTIMATE_MAX: usize = 100_000;
/// Profiles matched again per writer job.
const RECHECK_CHUNK_PROFILES: usize = 256;

impl SledStore {
    pub fn open(options: &SledStoreOptions) -> Result<SledStore, StoreError> {
        SledStore::open_with_segments(options, Arc::new(NoSegments))
    }

    /// Opens the store with the segment rules its writer evaluates changed
    /// profiles against.
    pub fn open_with_segments(
        options: &SledStoreOptions,
        segments: Arc<dyn MembershipRules>,
    ) -> Result<SledStore, StoreError> {
        SledStore::open_on_engine(open_engine(options)?, options, segments)
    }

    /// Opens the store on an engine opened elsewhere (the options' own
    /// engine settings are not used), e.g. one wrapped to inject faults.
    pub fn open_on_engine(
        engine: Arc<dyn Engine>,
        options: &SledStoreOptions,
        segments: Arc<dyn MembershipRules>,
    ) -> Result<SledStore, StoreError> {
        let raw = engine;
        let sealer = Sealer::new(open_key_store(&raw, options)?);
        let engine: Arc<dyn Engine> = match options.sealing.seal_values {
            true => Arc::new(SealedEngine::new(Arc::clone(&raw), sealer.clone())),
            false => Arc::clone(&raw),
        };
        let finished = sealer.finish_shredding(raw.as_ref())?;
        if finished > 0 {
            tracing::info!(
                profiles = finished,
                "finished destroying the keys of erased profiles"
            );
        }
        let tree = engine.as_ref();
        let counters = Counters::load(tree.begin()?.as_ref(), tree.shared())?;
        if let Some(bytes) = tree.get(keys::FUZZY_MODEL)? {
            match serde_json::from_slice::<MatchModel>(&bytes) {
                Ok(model) if model.fits_layout() => options.merge_rules.set_match_model(model),
                // A model of another layout is estimated again from the data.
                _ => options.merge_rules.request_estimate(),
            }
        }
        let index = IndexKeys::new(suppression_key(tree, options, &sealer)?);
        if options.suppression_key.is_none() && tree.get(keys::INDEX_KEY_ID)?.is_none() {
            // Tells a restore whose privacy records come from this
            // installation; servers racing here write the same value.
            let mut batch = Batch::default();
            batch.insert(keys::INDEX_KEY_ID, index.key_id().to_vec());
            raw.commit(batch)?;
        }
        let (queue, receiver) = mpsc::channel(options.write_queue_depth);
        let opened = feed::wall_clock();
        let memberships = Arc::new(MembershipIndex::load(tree)?);
        let instance = rand::random::<u64>();
        products::remove_retired_tables(tree)?;
        let listed = messages::list_all(tree)?;
        if listed > 0 {
            tracing::info!(
                records = listed,
                "listed message records under their profiles"
            );
        }
        let recommender: SharedRecommender = Arc::new(RwLock::new(products::load(tree)?));
        let writer_stats = Arc::new(WriterStats::default());
        writer_stats.set_live_profiles(count_keys(tree, keys::PROFILE)?);
        let writer = Writer {
            engine: Arc::clone(&engine),
            counters,
            counters_stale: false,
            group_calls_max: options.group_commit_calls_max,
            rules: options.merge_rules.clone(),
            // Another server may add such keys at any time.
            sparse: if tree.shared() {
                SparseKeys::default()
            } else {
                SparseKeys::load(tree, &[keys::HUB, keys::REJECTION, keys::SUPPRESSION])?
            },
            suppressor: index.clone(),
            segments,
            memberships: Arc::clone(&memberships),
            recommender: Arc::clone(&recommender),
            recommendations: options.recommendations,
            stats: Arc::clone(&writer_stats),
            feed: tree.shared().then(|| FeedWriter::new(instance)),
            definitions_stamp: tree.get(keys::DEFINITIONS_STAMP)?,
        };
        let writer_thread = std::thread::Builder::new()
            .name("sightline-writer".to_owned())
            .spawn(move || writer.run(receiver))?;
        let (commands, received) = std_mpsc::channel();
        let estimator = Estimator {
            engine: Arc::clone(&engine),
            index: index.clone(),
            queue: queue.clone(),
            rules: options.merge_rules.clone(),
        };
        let estimator_thread = std::thread::Builder::new()
            .name("sightline-match-model".to_owned())
            .spawn(move || estimator.run(received))?;
        let follower = match tree.shared() {
            true => Some(start_follower(
                &engine,
                &memberships,
                &queue,
                instance,
                opened,
            )?),
            false => None,
        };
        Ok(SledStore {
            follower: Mutex::new(follower),
            engine,
            raw,
            index,
            memberships,
            recommender,
            queue,
            writer_stats,
            writer_thread: Mutex::new(Some(writer_thread)),
            rules: options.merge_rules.clone(),
            estimator: Mutex::new(Some((commands, estimator_thread))),
        })
    }

    fn resolve(&self, id: ProfileId) -> Result<ProfileId, StoreError> {
        match self.engine.get(&keys::alias(id))? {
            Some(bytes) => decode_profile_id(&bytes),
            None => Ok(id),
        }
    }
}

/// Starts the thread that follows other servers' changes (`store::feed`).
fn start_follower(
    engine: &Arc<dyn Engine>,
    memberships: &Arc<MembershipIndex>,
    queue: &mpsc::Sender<Command>,
    instance: u64,
    opened: UnixMillis,
) -> Result<(std_mpsc::Sender<()>, JoinHandle<()>), StoreError> {
    let queue = queue.clone();
    let wake_writer: WakeWriter = Box::new(move || {
        let (reply, answer) = oneshot::channel::<Result<(), StoreError>>();
        queue.try_send(Command::Job(job(|_| Ok(()), reply))).is_ok()
            && answer.blocking_recv().is_ok_and(|ran| ran.is_ok())
    });
    let follower = Follower::new(
        Arc::clone(engine),
        Arc::clone(memberships),
        wake_writer,
        instance,
        opened,
    );
    let (stop, stopped) = std_mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("sightline-feed".to_owned())
        .spawn(move || follower.run(stopped))?;
    Ok((stop, thread))
}

/// Reads a live profile by its id, or by an id merged into it, with its
/// newest events: one round trip on a remote engine.
async fn read_live_profile(
    engine: &dyn Engine,
    id: ProfileId,
    events_max: usize,
) -> Result<Option<ProfileView>, StoreError> {
    let newest_events = |live| {
        vec![Read::Newest {
            prefix: keys::events_of(live).into(),
            limit: events_max,
        }]
    };
    let Some((live_id, bytes, mut found)) = read_with_record(engine, id, newest_events).await?
    else {
        return Ok(None);
    };
    let newest_events = found.pop().map(Found::into_pairs).unwrap_or_default();
    let record = ProfileRecord::from_bytes(&bytes)?;
    let traits = record.trait_views()?;
    Ok(Some(ProfileView {
        profile_id: live_id,
        merged_profile_ids: record.merged_ids.iter().copied().map(ProfileId).collect(),
        identifiers: record.identifiers.iter().map(|e| e.to_view()).collect(),
        traits,
        events: event_views(newest_events)?,
        event_count: record.event_count,
        journal: record.journal.iter().map(|entry| entry.to_view()).collect(),
        activity: record.activity(),
        consents: record.consents.iter().filter_map(|e| e.to_view()).collect(),
        consent_history: record
            .consent_history
            .iter()
            .filter_map(|e| e.to_view())
            .collect(),
        created_at: crate::model::UnixMillis(record.created_at_ms),
        updated_at: crate::model::UnixMillis(record.updated_at_ms),
    }))
}

/// The live profile an id names, its record, and what `reads_of` asks of
/// it, read together with the record. Identifiers point at live profiles
/// and the id in hand usually is one, so the alias is read only when the
/// id has no record (merged away before this read or between its
/// lookups); `None` when the profile never existed.
async fn read_with_record(
    engine: &dyn Engine,
    id: ProfileId,
    reads_of: impl Fn(ProfileId) -> Vec<Read>,
) -> Result<Option<(ProfileId, Vec<u8>, Vec<Found>)>, StoreError> {
    let mut live = id;
    for _ in 0..READ_ATTEMPTS_MAX {
        let mut reads = vec![Read::Get(keys::profile(live).into())];
        reads.extend(reads_of(live));
        let mut found = engine.read(reads).await?;
        let rest = found.split_off(1.min(found.len()));
        if let Some(record) = found.pop().and_then(Found::into_value) {
            return Ok(Some((live, record, rest)));
        }
        match read_alias(engine, live).await? {
            Some(next) if next != live => live = next,
            _ => return Ok(None),
        }
    }
    Err(StoreError::Corrupt {
        what: "alias chain",
        reason: format!("profile {id} did not settle after {READ_ATTEMPTS_MAX} lookups"),
    })
}

/// The profile an id was merged into, if it was.
async fn read_alias(engine: &dyn Engine, id: ProfileId) -> Result<Option<ProfileId>, StoreError> {
    match engine
        .read(vec![Read::Get(keys::alias(id).into())])
        .await?
        .pop()
        .and_then(Found::into_value)
    {
        Some(bytes) => decode_profile_id(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Stored events, newest first, as views oldest first.
fn event_views(
    newest_first: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Vec<crate::model::EventView>, StoreError> {
    let mut views = Vec::with_capacity(newest_first.len());
    for (key, value) in newest_first.into_iter().rev() {
        let (timestamp, sequence) = keys::decode_event(&key).ok_or(StoreError::Corrupt {
            what: "event key",
            reason: format!("unexpected length {}", key.len()),
        })?;
        let record: EventRecord = decode(&value, "event")?;
        views.push(record.to_view(timestamp, sequence)?);
    }
    Ok(views)
}

/// The configured engine: the PostgreSQL-wire database when one is named,
/// else sled's files in the data directory.
fn open_engine(options: &SledStoreOptions) -> Result<Arc<dyn Engine>, StoreError> {
    Ok(match &options.database {
        Some(database) => Arc::new(PostgresEngine::open(database)?),
        None => Arc::new(SledEngine::open(
            &options.data_dir,
            options.cache_capacity_bytes,
        )?),
    })
}

/// Re-estimates the match model off the writer thread, when matching asks
/// (the population doubled) or an operator does.
struct Estimator {
    engine: Arc<dyn Engine>,
    index: IndexKeys,
    queue: mpsc::Sender<Command>,
    rules: MergeRules,
}

impl Estimator {
    fn run(self, commands: std_mpsc::Receiver<EstimatorCommand>) {
        loop {
            match commands.recv_timeout(Duration::from_millis(ESTIMATE_POLL_INTERVAL_MS)) {
                Ok(EstimatorCommand::Estimate { at, reply }) => {
                    let _ = reply.send(self.estimate(at));
                }
                Ok(EstimatorCommand::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    return;
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    if self.rules.take_estimate_request() {
                        let estimated = self.estimate(SystemClock.now());
                        if let Err(error) = estimated.and_then(|_| self.recheck()) {
                            tracing::warn!(%error, "estimating the match model failed");
                        }
                    }
                }
            }
        }
    }

    /// Profiles with names, as the writer last counted them.
    fn population(&self) -> Result<u64, StoreError> {
        Ok(match self.engine.get(keys::FUZZY_POPULATION)? {
            Some(bytes) => keys::decode_u64(&bytes).unwrap_or(0),
            None => 0,
        })
    }

    /// Matches the near misses and pending candidates again under the
    /// model just estimated, a chunk per writer job so that ingest flows
    /// between chunks.
    fn recheck(&self) -> Result<(), StoreError> {
        let Some(thresholds) = self.rules.fuzzy_thresholds().copied() else {
            return Ok(());
        };
        let population = self.population()?;
        let ids = recheck::due(
            self.engine.as_ref(),
            &self.rules.match_model(),
            population,
            thresholds.review,
            RECHECKED_PER_ESTIMATE_MAX,
        )?;
        let mut merges = 0;
        for chunk in ids.chunks(RECHECK_CHUNK_PROFILES) {
            let chunk = chunk.to_vec();
            let at = SystemClock.now();
            let (reply, answer) = oneshot::channel();
            let body = move |context: &mut JobContext<'_, '_, '_>| {
                matching::match_stored(context, &chunk, at)
            };
            self.queue
                .blocking_send(Command::Job(job(body, reply)))
                .map_err(|_| StoreError::Closed)?;
            merges += answer
                .blocking_recv()
                .map_err(|_| StoreError::Closed)??
                .merges;
        }
        tracing::info!(
            profiles = ids.len(),
            merges,
            "profiles matched again under the new model"
        );
        Ok(())
    }

    fn estimate(&self, at: UnixMillis) -> Result<MatchModel, StoreError> {
        let next_profile_id = read_counter(self.engine.as_ref(), keys::NEXT_PROFILE_ID)?;
        let population = self.population()?;
        let previous = self.rules.match_model();
        let sample = match_training::collect_sample(
            self.engine.as_ref(),
            &self.index,
            next_profile_id,
            population,
            previous.version.wrapping_add(1),
        )?;
        let model = estimate(&sample, &previous, at.0);
        tracing::info!(
            version = model.version,
            population,
            random_pairs = model.random_pairs,
            blocked_pairs = model.blocked_pairs,
            duplicate_rate = model.duplicate_rate,
            "match model estimated"
        );
        let bytes = serde_json::to_vec(&model).map_err(|error| StoreError::Corrupt {
            what: "match model",
            reason: error.to_string(),
        })?;
        let stored = model.clone();
        let (reply, answer) = oneshot::channel();
        let body = move |context: &mut JobContext<'_, '_, '_>| {
            context.writes.insert(keys::FUZZY_MODEL, bytes.clone());
            context.rules.set_match_model(stored.clone());
            Ok(())
        };
        self.queue
            .blocking_send(Command::Job(job(body, reply)))
            .map_err(|_| StoreError::Closed)?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)??;
        Ok(model)
    }
}

/// The data keys of this store, opened with the master key; created with
/// a new store, never over data that has none.
fn open_key_store(
    raw: &Arc<dyn Engine>,
    options: &SledStoreOptions,
) -> Result<Arc<dyn KeyStore>, StoreError> {
    let sealing = &options.sealing;
    let exists = match raw.shared() {
        true => EngineKeys::exists(raw.as_ref())?,
        false => SlotFile::exists(&sealing.key_store_file),
    };
    if !exists && raw.scan_prefix(&[keys::PROFILE]).next().is_some() {
        return Err(StoreError::Config(format!(
            "the store holds profiles but no key store ({}); restore it with its key store \
             (sightline restore --keys-from), or name it with [privacy] key_store_file",
            sealing.key_store_file.display()
        )));
    }
    let master = sealing
        .master_key
        .load(exists)
        .map_err(|error| StoreError::Config(error.to_string()))?;
    let opened: Result<Arc<dyn KeyStore>, KeyStoreError> = match raw.shared() {
        true => EngineKeys::open(Arc::clone(raw), master, true).map(|keys| Arc::new(keys) as _),
        false => {
            SlotFile::open(&sealing.key_store_file, master, true).map(|keys| Arc::new(keys) as _)
        }
    };
    opened.map_err(|error| StoreError::Config(error.to_string()))
}

/// The configured suppression secret; the one an earlier version generated
/// and kept in the database; or one derived from the key store's index
/// secret, which never leaves the key store in the clear.
fn suppression_key(
    tree: &dyn Engine,
    options: &SledStoreOptions,
    sealer: &Sealer,
) -> Result<Vec<u8>, StoreError> {
    if let Some(key) = &options.suppression_key {
        return Ok(key.clone());
    }
    if tree.get(keys::SUPPRESSION_KEY)?.is_none() {
        return Ok(sealer
            .index_secret()
            .derive("suppression")
            .expose()
            .to_vec());
    }
    // Servers starting together on a new shared database race to store
    // the first key; the losers' transactions conflict, and read the
    // winner's when run again.
    let mut attempts_left = 10;
    loop {
        let transaction = tree.begin()?;
        if let Some(stored) = transaction.get(keys::SUPPRESSION_KEY)? {
            return Ok(stored.to_vec());
        }
        let mut key = vec![0u8; 32];
        // The thread generator is a CSPRNG seeded from the operating system.
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        let mut batch = Batch::default();
        batch.insert(keys::SUPPRESSION_KEY, key.clone());
        match transaction.commit(batch) {
            Ok(_) => return Ok(key),
            Err(EngineError::Conflict(_)) if attempts_left > 0 => {
                attempts_left -= 1;
                std::thread::sleep(Duration::from_millis(rand::random_range(1..20)));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn count_keys(tree: &dyn Engine, tag: u8) -> Result<u64, StoreError> {
    let mut count = 0;
    for entry in tree.scan_prefix(&[tag]) {
        entry?;
        count += 1;
    }
    Ok(count)
}

impl SledStore {
    /// Loads a backup into `options.data_dir`, which must be missing or
    /// empty, and makes it durable. With `privacy_source` (a newer backup,
    /// or the data directory of a stopped server of the same installation)
    /// it then re-applies the erasures and suppressions recorded there.
    /// Offline: no server may be using either directory.
    ///
    /// A backup holds values sealed under data keys it does not carry: the
    /// keys come from the installation's key store, as it is now, so that
    /// people erased since the backup stay unreadable. `keys_from` names it
    /// (the stopped server's data directory, or its database) unless the
    /// configured key store file already exists.
    pub fn restore(
        backup_dir: &Path,
        options: &SledStoreOptions,
        privacy_source: Option<&PrivacySource>,
        keys_from: Option<&PrivacySource>,
    ) -> Result<RestoreReport, StoreError> {
        let data_dir = options.data_dir.as_path();
        let into_directory = options.database.is_none();
        if into_directory && data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
            return Err(StoreError::Precondition(format!(
                "{} is not empty; restore only into a new data directory",
                data_dir.display()
            )));
        }
        // Read first: a source that cannot be read must leave nothing behind.
        let ledger = privacy_source.map(read_ledger).transpose()?;
        let target = match into_directory {
            true => None,
            false => {
                let engine = open_engine(options)?;
                if engine
                    .range(Bound::Unbounded, Bound::Unbounded)
                    .next()
                    .transpose()?
                    .is_some()
                {
                    return Err(StoreError::Precondition(
                        "the database already holds data; restore only into an empty database"
                            .to_owned(),
                    ));
                }
                Some(engine)
            }
        };
        let created = into_directory && !data_dir.exists();
        if into_directory {
            std::fs::create_dir_all(data_dir)?;
        }
        let restored = install_keys(options, keys_from, target.as_deref())
            .and_then(|()| SledStore::load_and_replay(backup_dir, options, ledger));
        if restored.is_err() {
            // Leave the target as it was found, so that the restore can
            // simply be run again.
            let cleared = match &target {
                Some(engine) => clear_engine(engine.as_ref()),
                None if created => std::fs::remove_dir_all(data_dir).map_err(StoreError::from),
                None => clear_directory(data_dir).map_err(StoreError::from),
            };
            if let Err(error) = cleared {
                tracing::warn!(%error, "a failed restore left data behind");
            }
        }
        restored
    }

    fn load_and_replay(
        backup_dir: &Path,
        options: &SledStoreOptions,
        ledger: Option<PrivacyLedger>,
    ) -> Result<RestoreReport, StoreError> {
        let mut report = {
            let engine = open_engine(options)?;
            let tree = engine.as_ref();
            let report = backup::load(backup_dir, tree)?;
            let key_store = open_key_store(&engine, options)?;
            let now = SystemClock.now();
            let shredded = ledger::drop_shredded(tree, key_store.as_ref(), now)?;
            if shredded.profiles > 0 {
                tracing::info!(
                    profiles = shredded.profiles,
                    identifiers = shredded.identifiers_suppressed,
                    "people erased after the backup stay erased"
                );
            }
            if let Some(ledger) = &ledger
                && options.suppression_key.is_none()
            {
                let restored = match tree.get(keys::INDEX_KEY_ID)? {
                    Some(id) => Some(id),
                    None => tree.get(keys::SUPPRESSION_KEY)?,
                };
                ledger.check_key(restored.as_deref())?;
            }
            report
        };
        if let Some(ledger) = ledger {
            let store = SledStore::open(options)?;
            let replayed = store.replay(ledger);
            store.close()?;
            report.replayed = Some(replayed?);
        }
        Ok(report)
    }

    fn replay(&self, ledger: PrivacyLedger) -> Result<ReplayReport, StoreError> {
        let ledger = Arc::new(ledger);
        let now = SystemClock.now();
        let tree = self.engine.clone();
        let found = Arc::clone(&ledger);
        let profiles = futures::executor::block_on(
            self.submit(move |_context| ledger::profiles_to_erase(tree.as_ref(), &found)),
        )?;
        let mut report = ReplayReport::default();
        // One job per person: each erasure is atomic on its own, as it is
        // when requested through the API.
        for (profile, request_id) in profiles {
            let erased = futures::executor::block_on(self.submit(move |context| {
                ledger::erase_again(
                    context.writes,
                    context.suppressor,
                    now,
                    profile,
                    &request_id,
                )
            }))?;
            report.profiles_erased += u64::from(erased);
        }
        futures::executor::block_on(self.submit(move |context| {
            ledger::copy_missing(context.writes, &ledger, &mut report)?;
            Ok(report)
        }))
    }
}

/// Where a restore reads the erasures made after its backup.
#[derive(Debug, Clone)]
pub enum PrivacySource {
    /// A newer backup, or the data directory of the stopped embedded server.
    Directory(PathBuf),
    /// The database of the installation being replaced.
    Database(PostgresOptions),
}

fn read_ledger(source: &PrivacySource) -> Result<PrivacyLedger, StoreError> {
    match source {
        PrivacySource::Directory(source) => PrivacyLedger::read(source, |dir| {
            let engine = SledEngine::open(dir, 64 * 1024 * 1024).map_err(|error| {
                StoreError::Precondition(format!(
                    "cannot open {} (is a server using it?): {error}",
                    dir.display()
                ))
            })?;
            Ok(Box::new(engine) as Box<dyn Engine>)
        }),
        PrivacySource::Database(database) => {
            PrivacyLedger::read_engine(&PostgresEngine::open(database)?)
        }
    }
}

impl SledStore {
    /// Every pair of a stopped store with its values opened through its
    /// key store, as the store itself reads them: for inspection, and for
    /// tests that check what the files hold against what they mean.
    pub fn opened_pairs(options: &SledStoreOptions) -> Result<Vec<KeyValue>, StoreError> {
        let raw = open_engine(options)?;
        let sealer = Sealer::new(open_key_store(&raw, options)?);
        let engine = SealedEngine::new(raw, sealer);
        Ok(engine
            .range(Bound::Unbounded, Bound::Unbounded)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The keyed hash that stands for `identifier` in the provenance of
    /// records (as stored: protobuf `fixed64`, little-endian), offline: what
    /// a check needs to show that no record ties anyone to an identifier.
    pub fn provenance_hash_bytes(
        options: &SledStoreOptions,
        identifier: &Identifier,
    ) -> Result<[u8; 8], StoreError> {
        let raw = open_engine(options)?;
        let sealer = Sealer::new(open_key_store(&raw, options)?);
        let index = IndexKeys::new(suppression_key(raw.as_ref(), options, &sealer)?);
        Ok(index.short_tag(identifier).to_le_bytes())
    }
}

impl SledStore {
    /// Re-seals the key store under a new master key, offline (the engine
    /// is opened, so a running server holding the data directory refuses
    /// it). Returns how many data keys were re-sealed.
    pub fn rotate_master_key(
        options: &SledStoreOptions,
        new: &SecretKey,
    ) -> Result<u64, StoreError> {
        let raw = open_engine(options)?;
        let old = options
            .sealing
            .master_key
            .load(true)
            .map_err(|error| StoreError::Config(error.to_string()))?;
        let rotated = match raw.shared() {
            true => rotate_engine_keys(raw.as_ref(), &old, new),
            false => rotate_slot_file(&options.sealing.key_store_file, &old, new),
        };
        rotated.map_err(|error| StoreError::Config(error.to_string()))
    }
}

/// Puts the installation's key store where the restored store will look
/// for it.
fn install_keys(
    options: &SledStoreOptions,
    keys_from: Option<&PrivacySource>,
    target: Option<&dyn Engine>,
) -> Result<(), StoreError> {
    let missing = || {
        StoreError::Precondition(
            "a backup opens only with the key store of its installation: name the stopped \
             server's data directory (or database) with --keys-from"
                .to_owned(),
        )
    };
    match (target, keys_from) {
        (None, _) if SlotFile::exists(&options.sealing.key_store_file) => Ok(()),
        (None, Some(PrivacySource::Directory(source))) => {
            let keys = source.join(KEY_STORE_FILE);
            if !keys.is_file() {
                return Err(StoreError::Precondition(format!(
                    "{} holds no key store ({KEY_STORE_FILE}); name the data directory of the \
                     stopped server",
                    source.display()
                )));
            }
            copy_private(&keys, &options.sealing.key_store_file)?;
            if let Some(generated) = options.sealing.master_key.generated_path() {
                let master = source.join(GENERATED_MASTER_KEY_FILE);
                if !generated.exists() && master.is_file() {
                    copy_private(&master, generated)?;
                }
            }
            Ok(())
        }
        (Some(target), Some(PrivacySource::Database(database))) => {
            let source = PostgresEngine::open(database)?;
            let mut batch = Batch::default();
            for entry in source.scan_prefix(&[KEY_ROW]) {
                let (key, value) = entry?;
                batch.insert(key, value);
                if batch.len() >= 1000 {
                    target.commit(std::mem::take(&mut batch))?;
                }
            }
            if batch.is_empty() && !EngineKeys::exists(target)? {
                return Err(missing());
            }
            target.commit(batch)?;
            Ok(())
        }
        (Some(target), _) if EngineKeys::exists(target)? => Ok(()),
        _ => Err(missing()),
    }
}

/// Copies a secret file, readable by its owner only, durably.
fn copy_private(from: &Path, to: &Path) -> Result<(), StoreError> {
    use std::io::Write;
    let bytes = std::fs::read(from)?;
    let mut file = create_private(to)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    sync_parent(to)?;
    Ok(())
}

/// Removes every pair, in batches.
fn clear_engine(engine: &dyn Engine) -> Result<(), StoreError> {
    loop {
        let mut batch = Batch::default();
        for entry in engine.range(Bound::Unbounded, Bound::Unbounded).take(1000) {
            batch.remove(entry?.0);
        }
        if batch.is_empty() {
            return Ok(());
        }
        engine.commit(batch)?;
    }
}

fn clear_directory(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path)?;
        } else {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn read_counter(tree: &dyn Engine, key: &[u8]) -> Result<u64, StoreError> {
    match tree.get(key)? {
        Some(bytes) => decode_counter(&bytes),
        None => Ok(FIRST_COUNTER_VALUE),
    }
}

impl SledStore {
    /// Queues a job for the writer and resolves with its answer once its
    /// group is durable.
    fn submit<T, F>(&self, body: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: for<'c, 'g, 't> FnMut(&mut JobContext<'c, 'g, 't>) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        let queue = self.queue.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            queue
                .send(Command::Job(job(body, reply)))
                .await
                .map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }
}

impl ProfileStore for SledStore {
    fn erase_subject(
        &self,
        call: ErasureCall,
    ) -> BoxFuture<'static, Result<ErasureOutcome, StoreError>> {
        self.submit(move |context| {
            let now = call.record.received_at;
            privacy::erase(context.writes, context.suppressor, now, call.clone())
        })
    }

    fn put_privacy_request(
        &self,
        request: PrivacyRequest,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.submit(move |context| {
            privacy::put_privacy_request(context.writes, &request);
            Ok(())
        })
    }

    fn privacy_request(&self, request_id: &str) -> Result<Option<PrivacyRequest>, StoreError> {
        match self.engine.get(&keys::privacy_request(request_id))? {
            Some(bytes) => Ok(Some(privacy::request_of(
                request_id,
                &decode(&bytes, "privacy request")?,
            ))),
            None => Ok(None),
        }
    }

    fn privacy_requests(&self) -> Result<Vec<PrivacyRequest>, StoreError> {
        let mut requests = Vec::new();
        for entry in self.engine.scan_prefix(&[keys::PRIVACY_REQUEST]) {
            let (key, value) = entry?;
            let id = String::from_utf8_lossy(&key[1..]).into_owned();
            requests.push(privacy::request_of(
                &id,
                &decode(&value, "privacy request")?,
            ));
        }
        Ok(requests)
    }

    fn record_access(
        &self,
        entries: Vec<AccessEntry>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.submit(move |context| {
            privacy::append_access(context.writes, context.counters, entries.clone())
        })
    }

    fn access_log(&self, ids: &[ProfileId]) -> Result<Vec<AccessEntry>, StoreError> {
        let mut entries = Vec::new();
        for &id in ids {
            for entry in self.engine.scan_prefix(&keys::access_of(id)) {
                let (key, value) = entry?;
                let Some((at, _)) = keys::decode_event(&key) else {
                    continue;
                };
                let record: AccessRecord = decode(&value, "access record")?;
                entries.push(AccessEntry {
                    profile: id,
                    at,
                    caller: record.caller,
                    method: record.method,
                });
            }
        }
        entries.sort_by_key(|entry| entry.at);
        Ok(entries)
    }

    fn expire_access_log(
        &self,
        ids: Vec<ProfileId>,
        cutoff: UnixMillis,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        self.submit(move |context| privacy::expire_access(context.writes, &ids, cutoff))
    }

    fn trait_history(&self, id: ProfileId) -> Result<Vec<crate::model::TraitView>, StoreError> {
        let live = self.resolve(id)?;
        let Some(bytes) = self.engine.get(&keys::profile(live))? else {
            return Ok(Vec::new());
        };
        let record = ProfileRecord::from_bytes(&bytes)?;
        let mut values = Vec::with_capacity(record.traits.len());
        for entry in &record.traits {
            values.extend(entry.to_view()?);
        }
        Ok(values)
    }

    fn put_segment(
        &self,
        draft: SegmentDraft,
    ) -> BoxFuture<'static, Result<(SegmentDefinition, bool, bool), StoreError>> {
        self.submit(move |context| membership::put_segment(context.writes, draft.clone()))
    }

    fn delete_segment(
        &self,
        id: String,
    ) -> BoxFuture<'static, Result<Option<SegmentDefinition>, StoreError>> {
        let deleted = self.submit(move |context| membership::delete_segment(context.writes, &id));
        let memberships = Arc::clone(&self.memberships);
        async move {
            let deleted = deleted.await?;
            if let Some(definition) = &deleted {
                memberships.drop_segment(definition.number);
            }
            Ok(deleted)
        }
        .boxed()
    }

    fn backup(&self, dir: PathBuf) -> BoxFuture<'static, Result<BackupReport, StoreError>> {
        // The copy holds values as they are on disk, sealed under data keys
        // it does not carry.
        let tree = self.raw.clone();
        // Between groups nothing is in flight and every acknowledged write
        // is in the tree: a copy taken there is one consistent state.
        let copy = self.submit(move |_context| {
            let temp = backup::prepare(&dir)?;
            match backup::copy_tree(tree.as_ref(), &temp) {
                Ok((keys, _, writer_blocked_ms)) => Ok((temp, keys, writer_blocked_ms)),
                Err(error) => {
                    // A partial copy is of no use to anyone.
                    let _ = std::fs::remove_file(&temp);
                    Err(error)
                }
            }
        });
        async move {
            let (temp, keys, writer_blocked_ms) = copy.await?;
            let (path, bytes) = tokio::task::spawn_blocking(move || backup::finish(&temp))
                .await
                .map_err(|error| StoreError::Io(std::io::Error::other(error)))??;
            tracing::info!(keys, bytes, writer_blocked_ms, "backup written");
            Ok(BackupReport {
                path,
                keys,
                bytes,
                writer_blocked_ms,
            })
        }
        .boxed()
    }

    fn mark_segment_ready(
        &self,
        id: String,
        version: u64,
    ) -> BoxFuture<'static, Result<Option<SegmentDefinition>, StoreError>> {
        self.submit(move |context| membership::mark_ready(context.writes, &id, version))
    }

    fn segments(&self) -> Result<Vec<SegmentDefinition>, StoreError> {
        membership::definitions_from(self.engine.scan_prefix(&[keys::SEGMENT]))
    }

    fn evaluate_memberships(
        &self,
        ids: Vec<ProfileId>,
        scope: SegmentScope,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.submit(move |context| {
            membership::evaluate_profiles(context.writes, context.segments, &ids, scope)
        })
    }

    /// The membership record is read with the profile record, together:
    /// a profile that exists without a membership record is in no
    /// segment; one that does not exist is not found.
    fn memberships_of(
        &self,
        id: ProfileId,
    ) -> BoxFuture<'static, Result<Option<LiveMemberships>, StoreError>> {
        let engine = Arc::clone(&self.engine);
        Box::pin(async move {
            let membership = |live| vec![Read::Get(keys::membership(live).into())];
            let Some((live, _, mut found)) = read_with_record(&*engine, id, membership).await?
            else {
                return Ok(None);
            };
            let memberships = match found.pop().and_then(Found::into_value) {
                Some(bytes) => membership::memberships_of_record(&decode(&bytes, "membership")?)
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            };
            Ok(Some((live, memberships)))
        })
    }

    fn segment_members(&self, number: crate::model::SegmentNumber) -> SegmentMembers {
        self.memberships.members(number)
    }

    fn segment_counts(&self, number: crate::model::SegmentNumber) -> (u64, u64) {
        self.memberships.counts(number)
    }

    fn watch_memberships(&self) -> tokio::sync::broadcast::Receiver<MembershipChange> {
        self.memberships.subscribe()
    }

    fn write_health(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.writer_stats.write_health()
    }

    fn stats(&self) -> StoreStats {
        let capacity = self.queue.max_capacity();
        StoreStats {
            writer: self.writer_stats.snapshot(),
            write_queue_depth: (capacity - self.queue.capacity()) as u64,
            write_queue_capacity: capacity as u64,
            size_on_disk_bytes: self.engine.size_on_disk().unwrap_or(0),
            recommender: match self.recommender.read() {
                Ok(model) => model.stats(),
                Err(poisoned) => poisoned.into_inner().stats(),
            },
        }
    }

    fn apply(&self, calls: Vec<WriteCall>) -> BoxFuture<'static, Result<ApplyResults, StoreError>> {
        let queue = self.queue.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            queue
                .send(Command::Apply { calls, reply })
                .await
                .map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    fn unmerge(&self, call: UnmergeCall) -> BoxFuture<'static, Result<UnmergeOutcome, StoreError>> {
        self.submit(move |context| {
            apply_unmerge(
                context.writes,
                context.counters,
                context.segments.custom_traits(),
                &call,
            )
        })
    }

    fn for_each_profile_facts(
        &self,
        visit: &mut dyn FnMut(&ProfileFacts<'_>),
    ) -> Result<(), StoreError> {
        membership::for_each_profile_facts(self.engine.as_ref(), visit)
    }

    fn for_each_activity(&self, visit: &mut dyn FnMut(&Activity)) -> Result<(), StoreError> {
        for entry in self.engine.scan_prefix(&[keys::PROFILE]) {
            let (_, value) = entry?;
            let record = ProfileRecord::for_reading(&value)?;
            visit(&record.activity());
        }
        Ok(())
    }

    fn save_rfm_quintiles(
        &self,
        quintiles: RfmQuintiles,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.submit(move |context| {
            let flat = |cuts: &[RankKey]| cuts.iter().flatten().copied().collect();
            let record = RfmRecord {
                recency: flat(&quintiles.recency),
                frequency: flat(&quintiles.frequency),
                monetary: flat(&quintiles.monetary),
                computed_at_ms: quintiles.computed_at.0,
                customers: quintiles.customers,
            };
            context
                .writes
                .insert(keys::RFM_QUINTILES, record.encode_to_vec());
            Ok(())
        })
    }

    fn load_rfm_quintiles(&self) -> Result<Option<RfmQuintiles>, StoreError> {
        let Some(bytes) = self.engine.get(keys::RFM_QUINTILES)? else {
            return Ok(None);
        };
        let record: RfmRecord = decode(&bytes, "rfm quintiles")?;
        let keys = |flat: &[i64]| -> Vec<RankKey> {
            flat.chunks_exact(3)
                .map(|key| [key[0], key[1], key[2]])
                .collect()
        };
        Ok(Some(RfmQuintiles {
            recency: keys(&record.recency),
            frequency: keys(&record.frequency),
            monetary: keys(&record.monetary),
            computed_at: UnixMillis(record.computed_at_ms),
            customers: record.customers,
        }))
    }

    fn expire_events(
        &self,
        ids: Vec<ProfileId>,
        cutoff: UnixMillis,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        self.submit(move |context| {
            let mut removed = 0;
            for id in ids.iter().copied() {
                let Some(bytes) = context.writes.get(&keys::profile(id))? else {
                    continue;
                };
                let mut expired = 0;
                // Event keys sort by time, so the old ones are a prefix run.
                for (key, _) in context.writes.scan_prefix(&keys::events_of(id))? {
                    match keys::decode_event(&key) {
                        Some((timestamp, _)) if timestamp < cutoff => {
                            context.writes.remove(key);
                            expired += 1;
                        }
                        _ => break,
                    }
                }
                if expired > 0 {
                    let mut record = ProfileRecord::from_bytes(&bytes)?;
                    record.event_count = record.event_count.saturating_sub(expired);
                    let custom = context.segments.custom_traits();
                    if custom.any() {
                        recompute_custom_traits(context.writes, id, &mut record, custom, None)?;
                    }
                    context
                        .writes
                        .insert(keys::profile(id), record.into_bytes());
                    removed += expired;
                }
            }
            Ok(removed)
        })
    }

    fn update_consent(
        &self,
        call: ConsentCall,
    ) -> BoxFuture<'static, Result<ProfileId, StoreError>> {
        self.submit(move |context| consent::apply_consent(context.writes, &call))
    }

    fn review_match_candidate(
        &self,
        review: CandidateReview,
    ) -> BoxFuture<'static, Result<ReviewOutcome, StoreError>> {
        self.submit(move |context| matching::review(context, &review))
    }

    fn match_profiles(
        &self,
        ids: Vec<ProfileId>,
        at: UnixMillis,
    ) -> BoxFuture<'static, Result<MatchPassOutcome, StoreError>> {
        self.submit(move |context| matching::match_stored(context, &ids, at))
    }

    fn estimate_match_model(
        &self,
        at: UnixMillis,
    ) -> BoxFuture<'static, Result<MatchModel, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = match self.estimator.lock() {
            Ok(estimator) => estimator.as_ref().is_some_and(|(commands, _)| {
                commands
                    .send(EstimatorCommand::Estimate { at, reply })
                    .is_ok()
            }),
            Err(_) => false,
        };
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            answer.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    fn match_model(&self) -> MatchModel {
        (*self.rules.match_model()).clone()
    }

    fn count_match_candidates(&self) -> Result<u64, StoreError> {
        let mut count = 0;
        for entry in self.engine.scan_prefix(&[keys::CANDIDATE]) {
            entry?;
            count += 1;
        }
        Ok(count)
    }

    fn list_match_candidates(
        &self,
        after: Option<(ProfileId, ProfileId)>,
        limit: usize,
    ) -> Result<Vec<MatchCandidate>, StoreError> {
        let start = match after {
            Some((first, second)) => {
                let mut key = keys::candidate(first, second).to_vec();
                // Just past the given pair.
                key.push(0);
                key
            }
            None => vec![keys::CANDIDATE],
        };
        let mut candidates = Vec::new();
        for entry in self.engine.range(Bound::Included(start), Bound::Unbounded) {
            let (key, value) = entry?;
            if key.first() != Some(&keys::CANDIDATE) || candidates.len() >= limit {
                break;
            }
            let Some((first, second)) = keys::decode_pair(&key) else {
                continue;
            };
            let live = [self.resolve(first)?, self.resolve(second)?];
            let stale = live[0] == live[1]
                || self.engine.get(&keys::profile(live[0]))?.is_none()
                || self.engine.get(&keys::profile(live[1]))?.is_none()
                || self
                    .engine
                    .get(&keys::rejection(live[0], live[1]))?
                    .is_some();
            if stale {
                continue;
            }
            let record: CandidateRecord = decode(&value, "candidate")?;
            candidates.push(MatchCandidate {
                first,
                second,
                live,
                score: record.score,
                evidence: record
                    .evidence
                    .into_iter()
                    .map(|evidence| MatchEvidence {
                        field: evidence.field,
                        similarity: evidence.similarity,
                        weight: evidence.weight,
                        level: evidence.level,
                    })
                    .collect(),
                found_at: UnixMillis(record.found_at_ms),
                model_version: record.model_version,
            });
        }
        Ok(candidates)
    }

    fn profile_ids_after(
        &self,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<ProfileId>, StoreError> {
        let start = keys::profile(ProfileId(after.map_or(0, |id| id.0.saturating_add(1))));
        let mut ids = Vec::with_capacity(limit.min(1024));
        for entry in self
            .engine
            .range(Bound::Included(start.to_vec()), Bound::Unbounded)
        {
            let (key, _) = entry?;
            if key.first() != Some(&keys::PROFILE) || ids.len() >= limit {
                break;
            }
            if let Some(id) = keys::decode_u64(&key[1..]) {
                ids.push(ProfileId(id));
            }
        }
        Ok(ids)
    }

    fn find_profile_id(
        &self,
        identifier: &Identifier,
    ) -> BoxFuture<'static, Result<Option<ProfileId>, StoreError>> {
        let reading = self
            .engine
            .read(vec![Read::Get(keys::identifier(&self.index, identifier))]);
        Box::pin(async move {
            match reading.await?.pop().and_then(Found::into_value) {
                Some(bytes) => decode_profile_id(&bytes).map(Some),
                None => Ok(None),
            }
        })
    }

    fn read_profile(
        &self,
        id: ProfileId,
        events_max: usize,
    ) -> BoxFuture<'static, Result<Option<ProfileView>, StoreError>> {
        let engine = Arc::clone(&self.engine);
        Box::pin(async move { read_live_profile(&*engine, id, events_max).await })
    }

    fn shopper(&self, id: ProfileId) -> Result<Option<Shopper>, StoreError> {
        let mut live_id = self.resolve(id)?;
        for _ in 0..READ_ATTEMPTS_MAX {
            let Some(bytes) = self.engine.get(&keys::profile(live_id))? else {
                let next = self.resolve(live_id)?;
                if next == live_id {
                    return Ok(None);
                }
                live_id = next;
                continue;
            };
            let record = ProfileRecord::from_bytes(&bytes)?;
            return Ok(Some(Shopper {
                profile_id: live_id,
                history: products::history_in(&record),
                activity: record.activity(),
                consents: record.consents.iter().filter_map(|e| e.to_view()).collect(),
            }));
        }
        Err(StoreError::Corrupt {
            what: "alias chain",
            reason: format!("profile {id} did not settle after {READ_ATTEMPTS_MAX} lookups"),
        })
    }

    fn put_custom_trait(
        &self,
        definition: CustomTraitDefinition,
    ) -> BoxFuture<'static, Result<(CustomTraitDefinition, bool), StoreError>> {
        self.submit(move |context| custom_traits::put(context.writes, definition.clone()))
    }

    fn delete_custom_trait(
        &self,
        name: String,
    ) -> BoxFuture<'static, Result<Option<CustomTraitDefinition>, StoreError>> {
        self.submit(move |context| custom_traits::delete(context.writes, &name))
    }

    fn mark_custom_trait_ready(
        &self,
        name: String,
        updated_at: UnixMillis,
    ) -> BoxFuture<'static, Result<Option<CustomTraitDefinition>, StoreError>> {
        self.submit(move |context| custom_traits::mark_ready(context.writes, &name, updated_at))
    }

    fn custom_traits(&self) -> Result<Vec<CustomTraitDefinition>, StoreError> {
        custom_traits::all(self.engine.as_ref())
    }

    fn recompute_custom_trait(
        &self,
        ids: Vec<ProfileId>,
        name: String,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.submit(move |context| {
            for id in ids.iter().copied() {
                let Some(bytes) = context.writes.get(&keys::profile(id))? else {
                    continue;
                };
                let mut record = ProfileRecord::from_bytes(&bytes)?;
                recompute_custom_traits(
                    context.writes,
                    id,
                    &mut record,
                    context.segments.custom_traits(),
                    Some(&name),
                )?;
                context
                    .writes
                    .insert(keys::profile(id), record.into_bytes());
            }
            Ok(())
        })
    }

    fn recommender(&self) -> SharedRecommender {
        Arc::clone(&self.recommender)
    }

    fn put_products(
        &self,
        uploads: Vec<ProductUpload>,
    ) -> BoxFuture<'static, Result<(u32, u32), StoreError>> {
        self.submit(move |context| products::put_products(context.writes, &uploads))
    }

    fn close(&self) -> Result<(), StoreError> {
        // The follower and the estimator may be waiting on the writer: stop
        // them first.
        let follower = self.follower.lock().ok().and_then(|mut slot| slot.take());
        if let Some((stop, thread)) = follower {
            let _ = stop.send(());
            if thread.join().is_err() {
                tracing::error!("feed thread panicked");
            }
        }
        let estimator = self.estimator.lock().ok().and_then(|mut slot| slot.take());
        if let Some((commands, thread)) = estimator {
            let _ = commands.send(EstimatorCommand::Stop);
            if thread.join().is_err() {
                tracing::error!("match model thread panicked");
            }
        }
        let handle = self
            .writer_thread
            .lock()
            .map_err(|_| StoreError::Closed)?
            .take();
        let Some(handle) = handle else {
            return Ok(());
        };
        // The writer finishes every call queued before this command. Not
        // `blocking_send`: close may run on a runtime thread (e.g. in drop).
        let mut shutdown = Command::Shutdown;
        loop {
            match self.queue.try_send(shutdown) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(command)) => {
                    shutdown = command;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!("writer had already stopped");
                    break;
                }
            }
        }
        handle
            .join()
            .map_err(|_| StoreError::CommitFailed("writer thread panicked".to_owned()))
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "closing the store failed");
        }
    }
}
