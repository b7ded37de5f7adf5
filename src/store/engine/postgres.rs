//! The PostgreSQL-wire engine: one table of `key bytea primary key, value
//! bytea`, for PostgreSQL and the distributed databases that speak its
//! protocol (CockroachDB, YugabyteDB). Only SQL those run too: no
//! sequences, advisory locks, notifications, triggers or table locks.
//!
//! Every batch is one `SERIALIZABLE` transaction, retried whole with
//! jittered backoff on a serialization failure, and durable once `COMMIT`
//! returns. The engine's callers are synchronous (the writer thread, and
//! reads made from async handlers), so queries run on a small runtime of
//! the engine's own and callers wait for their answer.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use super::{
    Batch, Durability, Engine, EngineError, Found, KeyValue, Read, Reading, Scan, Transaction,
};

/// The layout this binary reads and writes. A database holding a newer one
/// was written by a newer binary, which may store what this one cannot read.
pub const SCHEMA_VERSION: i64 = 1;

const TABLE: &str = "sightline_kv";
const BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
const SCHEMA_TABLE: &str = "sightline_schema";

/// Attempts of one transaction before a serialization failure is reported.
const COMMIT_ATTEMPTS_MAX: u32 = 10;
const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(2);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Scans read pages that grow: a scan stopped after a few pairs (a
/// profile's newest events) costs one small query, a full scan few.
const FIRST_PAGE: i64 = 64;
const LARGEST_PAGE: i64 = 4096;

/// Keys per query of a read ahead: one parameter array stays small.
const READ_AHEAD_CHUNK: usize = 4096;

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// `postgres://user[:password]@host[:port]/database[?options]`.
    pub url: String,
    /// Connections for reads, besides the one that writes.
    pub read_connections: usize,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    /// CA certificates (PEM) the database's certificate must chain to;
    /// needed for `sslmode=require`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl From<tokio_postgres::Error> for EngineError {
    fn from(error: tokio_postgres::Error) -> Self {
        describe(&error)
    }
}

/// The error without what the database may quote of the data (a `DETAIL`
/// can hold key bytes): its message and SQLSTATE only.
fn describe(error: &tokio_postgres::Error) -> EngineError {
    match error.as_db_error() {
        Some(db) => {
            let message = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            match *db.code() {
                SqlState::T_R_SERIALIZATION_FAILURE | SqlState::T_R_DEADLOCK_DETECTED => {
                    EngineError::Conflict(message)
                }
                SqlState::ADMIN_SHUTDOWN
                | SqlState::CRASH_SHUTDOWN
                | SqlState::CANNOT_CONNECT_NOW
                | SqlState::CONNECTION_EXCEPTION
                | SqlState::CONNECTION_FAILURE
                | SqlState::TOO_MANY_CONNECTIONS => EngineError::Unavailable(message),
                _ => EngineError::Backend(message),
            }
        }
        None if error.is_closed() => {
            EngineError::Unavailable("the connection to the database closed".to_owned())
        }
        None => EngineError::Unavailable(with_causes(error)),
    }
}

/// The error and what caused it ("error connecting to server: Connection
/// refused"): the driver's own message alone rarely says what went wrong.
fn with_causes(error: &tokio_postgres::Error) -> String {
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

/// What an engine error says, without the variant's own prefix.
fn reason(error: EngineError) -> String {
    match error {
        EngineError::Backend(message)
        | EngineError::Unavailable(message)
        | EngineError::Config(message)
        | EngineError::Conflict(message) => message,
        other => other.to_string(),
    }
}

fn retryable(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE) | Some(&SqlState::T_R_DEADLOCK_DETECTED)
    )
}

/// One connection with its prepared statements.
struct Session {
    client: Client,
    get: Statement,
    get_many: Statement,
    upsert: Statement,
    delete: Statement,
    forward_to: Statement,
    forward_open: Statement,
    backward_to: Statement,
    backward_open: Statement,
}

/// Where to connect, and how sessions start, shared by every connection.
struct Connector {
    config: tokio_postgres::Config,
    /// `None`: plain connections (`sslmode=disable`, or `prefer` without
    /// a CA file).
    tls: Option<super::postgres_tls::RustlsConnect>,
    /// For messages: host, port, database and user, never the password.
    target: String,
    statement_timeout: Duration,
}

impl Connector {
    async fn client(&self) -> Result<Client, EngineError> {
        let unreachable = |error: tokio_postgres::Error| {
            EngineError::Unavailable(format!(
                "cannot connect to the database {}: {}",
                self.target,
                reason(describe(&error))
            ))
        };
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(unreachable)?;
                tokio::spawn(watch(connection));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(unreachable)?;
                tokio::spawn(watch(connection));
                client
            }
        };
        client
            .batch_execute(&format!(
                // Notices ("relation already exists, skipping") are not
                // worth a log line.
                "SET statement_timeout = {}; SET client_min_messages = warning",
                self.statement_timeout.as_millis().max(1)
            ))
            .await?;
        Ok(client)
    }

    async fn connect(&self) -> Result<Session, EngineError> {
        let client = self.client().await?;
        let select = format!("SELECT key, value FROM {TABLE}");
        Ok(Session {
            get: client
                .prepare(&format!("SELECT value FROM {TABLE} WHERE key = $1"))
                .await?,
            get_many: client
                .prepare(&format!("{select} WHERE key = ANY($1::BYTEA[])"))
                .await?,
            upsert: client
                .prepare(&format!(
                    "INSERT INTO {TABLE} (key, value) \
                     SELECT * FROM unnest($1::BYTEA[], $2::BYTEA[]) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ))
                .await?,
            delete: client
                .prepare(&format!("DELETE FROM {TABLE} WHERE key = ANY($1::BYTEA[])"))
                .await?,
            forward_to: client
                .prepare(&format!(
                    "{select} WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3"
                ))
                .await?,
            forward_open: client
                .prepare(&format!("{select} WHERE key >= $1 ORDER BY key LIMIT $2"))
                .await?,
            backward_to: client
                .prepare(&format!(
                    "{select} WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT $3"
                ))
                .await?,
            backward_open: client
                .prepare(&format!(
                    "{select} WHERE key >= $1 ORDER BY key DESC LIMIT $2"
                ))
                .await?,
            client,
        })
    }
}

/// Drives a connection until it ends, saying why it ended.
async fn watch<F>(connection: F)
where
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        tracing::warn!(error = %describe(&error), "database connection ended");
    }
}

/// A connection made when first needed and again after it broke, so that
/// the engine recovers by itself once the database is back.
#[derive(Default)]
struct Slot {
    session: Mutex<Option<Arc<Session>>>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Session>> {
        let session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        session
            .as_ref()
            .filter(|session| !session.client.is_closed())
            .cloned()
    }

    async fn session(&self, connector: &Connector) -> Result<Arc<Session>, EngineError> {
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let fresh = Arc::new(connector.connect().await?);
        let mut slot = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(Arc::clone(&fresh));
        Ok(fresh)
    }
}

struct Shared {
    connector: Connector,
    readers: Vec<Slot>,
    next_reader: AtomicUsize,
    /// The writer's transactions, one at a time on a connection of their
    /// own for their whole duration.
    transactions: Arc<tokio::sync::Mutex<Slot>>,
    /// Batches applied outside any transaction (`apply`), which the writer
    /// may make while its transaction is open.
    batches: tokio::sync::Mutex<Slot>,
}

impl Shared {
    async fn reader(&self) -> Result<Arc<Session>, EngineError> {
        let at = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[at].session(&self.connector).await
    }

    /// A reader for a caller on another runtime: the connection, when one
    /// must be made, is made and driven on the engine's runtime, which
    /// outlives the caller's tasks.
    async fn reader_for(
        self: &Arc<Self>,
        engine_runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<Session>, EngineError> {
        let at = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        if let Some(session) = self.readers[at].current() {
            return Ok(session);
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(self);
        engine_runtime.spawn(async move {
            let _ = answer.send(shared.readers[at].session(&shared.connector).await);
        });
        answered.await.map_err(|_| {
            EngineError::Unavailable("the database task ended without an answer".to_owned())
        })?
    }

    /// Applies the writes in one serializable transaction, retried whole on
    /// a serialization failure.
    async fn write(&self, writes: Writes) -> Result<(), EngineError> {
        let slot = self.batches.lock().await;
        let mut backoff = RETRY_BACKOFF_FIRST;
        let mut attempt = 1;
        loop {
            let session = slot.session(&self.connector).await?;
            let outcome = async {
                session.client.batch_execute(BEGIN).await?;
                write_rows(&session, &writes).await?;
                session.client.batch_execute("COMMIT").await
            }
            .await;
            match outcome {
                Ok(()) => return Ok(()),
                Err(error) => {
                    end_failed(&slot, &session, &error).await;
                    if retryable(&error) && attempt < COMMIT_ATTEMPTS_MAX {
                        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
                        tokio::time::sleep(jittered).await;
                        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                        attempt += 1;
                    } else {
                        return Err(describe(&error));
                    }
                }
            }
        }
    }
}

/// Leaves a failed transaction: rolled back, or, when the connection broke
/// (or its state is unknown), the connection dropped so that the next use
/// makes a fresh one.
async fn end_failed(slot: &Slot, session: &Session, error: &tokio_postgres::Error) {
    if session.client.is_closed() || error.code().is_none() {
        *slot.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
    } else {
        let _ = session.client.batch_execute("ROLLBACK").await;
    }
}

/// A batch as the statements take it: a key written twice ends as its
/// last write.
#[derive(Default)]
struct Writes {
    removes: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
}

impl From<Batch> for Writes {
    fn from(batch: Batch) -> Self {
        let mut last = std::collections::BTreeMap::new();
        for (key, value) in batch.into_writes() {
            last.insert(key, value);
        }
        let mut writes = Writes::default();
        for (key, value) in last {
            match value {
                Some(value) => {
                    writes.keys.push(key);
                    writes.values.push(value);
                }
                None => writes.removes.push(key),
            }
        }
        writes
    }
}

impl Writes {
    fn is_empty(&self) -> bool {
        self.removes.is_empty() && self.keys.is_empty()
    }
}

/// The removals and the upserts, sent together.
async fn write_rows(session: &Session, writes: &Writes) -> Result<(), tokio_postgres::Error> {
    let removed = async {
        match writes.removes.is_empty() {
            true => Ok(0),
            false => {
                session
                    .client
                    .execute(&session.delete, &[&writes.removes])
                    .await
            }
        }
    };
    let written = async {
        match writes.keys.is_empty() {
            true => Ok(0),
            false => {
                session
                    .client
                    .execute(&session.upsert, &[&writes.keys, &writes.values])
                    .await
            }
        }
    };
    let (removed, written) = futures::join!(removed, written);
    removed.and(written).map(|_| ())
}

async fn query_get(session: &Session, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
    let row = session.client.query_opt(&session.get, &[&key]).await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// What each key holds, in the order asked, in one query.
async fn query_many(
    session: &Session,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
    let rows = session.client.query(&session.get_many, &[&keys]).await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        let key: Vec<u8> = row.try_get(0)?;
        found.insert(key, row.try_get::<_, Vec<u8>>(1)?);
    }
    Ok(keys.iter().map(|key| found.remove(key)).collect())
}

async fn query_page(
    session: &Session,
    from: &[u8],
    to: Option<&[u8]>,
    backward: bool,
    limit: i64,
) -> Result<Vec<KeyValue>, EngineError> {
    let client = &session.client;
    let rows = match (to, backward) {
        (Some(to), false) => {
            client
                .query(&session.forward_to, &[&from, &to, &limit])
                .await?
        }
        (None, false) => {
            client
                .query(&session.forward_open, &[&from, &limit])
                .await?
        }
        (Some(to), true) => {
            client
                .query(&session.backward_to, &[&from, &to, &limit])
                .await?
        }
        (None, true) => {
            client
                .query(&session.backward_open, &[&from, &limit])
                .await?
        }
    };
    rows.into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

async fn read_one(session: &Session, read: &Read) -> Result<Found, EngineError> {
    match read {
        Read::Get(key) => query_get(session, key).await.map(Found::Value),
        Read::Newest { prefix, limit } => query_prefix(session, prefix, true, *limit)
            .await
            .map(Found::Pairs),
    }
}

/// Up to `limit` pairs under the prefix, in pages.
async fn query_prefix(
    session: &Session,
    prefix: &[u8],
    backward: bool,
    limit: usize,
) -> Result<Vec<KeyValue>, EngineError> {
    let mut pairs = Vec::new();
    let mut from = prefix.to_vec();
    let mut to = super::prefix_end(prefix);
    loop {
        let wanted = limit.saturating_sub(pairs.len()).min(LARGEST_PAGE as usize);
        if wanted == 0 {
            break;
        }
        let page = query_page(session, &from, to.as_deref(), backward, wanted as i64).await?;
        let exhausted = page.len() < wanted;
        if let Some((last, _)) = page.last() {
            if backward {
                to = Some(last.clone());
            } else {
                from = last.clone();
                from.push(0);
            }
        }
        pairs.extend(page);
        if exhausted {
            break;
        }
    }
    Ok(pairs)
}

/// Where a paged scan reads its pages: the engine's readers, or one
/// transaction.
trait Pages {
    fn page(
        &self,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
        backward: bool,
        limit: i64,
    ) -> Result<Vec<KeyValue>, EngineError>;
}

fn scan<'s>(
    source: &'s dyn Pages,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    backward: bool,
) -> Scan<'s> {
    Box::new(PagedScan {
        source,
        from: lower_inclusive(from),
        to: upper_exclusive(to),
        backward,
        page: Vec::new().into_iter(),
        next_limit: FIRST_PAGE,
        exhausted: false,
    })
}

/// The writer's transaction: `BEGIN ISOLATION LEVEL SERIALIZABLE` on the
/// transaction connection, held until the commit or the drop.
struct PgTransaction<'e> {
    engine: &'e PostgresEngine,
    session: Arc<Session>,
    /// Keeps other transactions off the connection; `None` once handed to
    /// the task that ends the transaction.
    slot: Option<tokio::sync::OwnedMutexGuard<Slot>>,
    /// The first error: the database aborted the transaction then, and so
    /// does every later read and the commit.
    failure: Mutex<Option<EngineError>>,
    /// Every key read so far, with what it held (`None`: absent). Nothing
    /// but this transaction's commit changes what it sees, so a key is
    /// read from the database once.
    seen: Mutex<HashMap<Vec<u8>, Option<Vec<u8>>>>,
    /// What prefixes read ahead held, for scans of exactly those prefixes.
    prefixes_seen: Mutex<HashMap<Vec<u8>, Vec<KeyValue>>>,
    /// Whether `BEGIN` went out, with the first statement.
    begun: AtomicBool,
}

impl PgTransaction<'_> {
    /// Runs statements of the transaction on its connection. The first
    /// also opens the transaction, sent in the same round trip ahead of
    /// them: a group pays no trip of its own for `BEGIN`.
    fn statement<T, F, Fut>(&self, statements: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        if let Some(failure) = self.failed() {
            return Err(failure);
        }
        let opening = !self.begun.swap(true, Ordering::Relaxed);
        let session = Arc::clone(&self.session);
        let work = statements(Arc::clone(&session));
        self.note(self.engine.run(move |_| async move {
            if !opening {
                return work.await;
            }
            let (opened, done) = futures::join!(session.client.batch_execute(BEGIN), work);
            opened.map_err(|error| describe(&error))?;
            done
        }))
    }

    fn prefixes_seen(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Vec<KeyValue>>> {
        self.prefixes_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Option<Vec<u8>>>> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn failed(&self) -> Option<EngineError> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(again)
    }

    fn note<T>(&self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        if let Err(error) = &result {
            let mut failure = self
                .failure
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if failure.is_none() {
                *failure = Some(again(error));
            }
        }
        result
    }
}

/// The same failure, reported once more.
fn again(error: &EngineError) -> EngineError {
    match error {
        EngineError::Conflict(message) => EngineError::Conflict(message.clone()),
        EngineError::Unavailable(message) => EngineError::Unavailable(message.clone()),
        other => EngineError::Backend(other.to_string()),
    }
}

impl Pages for PgTransaction<'_> {
    fn page(
        &self,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
        backward: bool,
        limit: i64,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.statement(move |session| async move {
            query_page(&session, &from, to.as_deref(), backward, limit).await
        })
    }
}

impl Transaction for PgTransaction<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if let Some(failure) = self.failed() {
            return Err(failure);
        }
        if let Some(value) = self.seen().get(key) {
            return Ok(value.clone());
        }
        let owned = key.to_vec();
        let value =
            self.statement(move |session| async move { query_get(&session, &owned).await })?;
        self.seen().insert(key.to_vec(), value.clone());
        Ok(value)
    }

    /// The keys in chunks and every prefix's pages, all asked for at once
    /// on the transaction's connection: one round trip together.
    fn read_ahead(&self, keys: &[Vec<u8>], prefixes: &[Vec<u8>]) -> Result<(), EngineError> {
        let mut keys_wanted: Vec<Vec<u8>> = {
            let seen = self.seen();
            keys.iter()
                .filter(|key| !seen.contains_key(key.as_slice()))
                .cloned()
                .collect()
        };
        keys_wanted.sort_unstable();
        keys_wanted.dedup();
        let mut prefixes_wanted: Vec<Vec<u8>> = {
            let known = self.prefixes_seen();
            prefixes
                .iter()
                .filter(|prefix| !known.contains_key(prefix.as_slice()))
                .cloned()
                .collect()
        };
        prefixes_wanted.sort_unstable();
        prefixes_wanted.dedup();
        if keys_wanted.is_empty() && prefixes_wanted.is_empty() {
            return Ok(());
        }
        let (values, pages) = self.statement(move |session| async move {
            let chunks = futures::future::try_join_all(
                keys_wanted
                    .chunks(READ_AHEAD_CHUNK)
                    .map(|chunk| query_many(&session, chunk)),
            );
            let pages = futures::future::try_join_all(
                prefixes_wanted
                    .iter()
                    .map(|prefix| query_prefix(&session, prefix, false, usize::MAX)),
            );
            let (chunks, pages) = futures::future::try_join(chunks, pages).await?;
            let values: Vec<_> = keys_wanted
                .into_iter()
                .zip(chunks.into_iter().flatten())
                .collect();
            Ok((
                values,
                prefixes_wanted.into_iter().zip(pages).collect::<Vec<_>>(),
            ))
        })?;
        self.seen().extend(values);
        self.prefixes_seen().extend(pages);
        Ok(())
    }

    fn known_absent(&self, keys: &[Vec<u8>]) {
        let mut seen = self.seen();
        for key in keys {
            seen.entry(key.clone()).or_insert(None);
        }
    }

    fn reads_ahead(&self) -> bool {
        true
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        if let Bound::Included(prefix) = &from {
            let known = self
                .prefixes_seen()
                .get(prefix)
                .filter(|_| to == super::prefix_bounds(prefix).1)
                .cloned();
            if let Some(pairs) = known {
                return Box::new(pairs.into_iter().map(Ok));
            }
        }
        scan(self, from, to, false)
    }

    fn commit(mut self: Box<Self>, batch: Batch) -> Result<Durability, EngineError> {
        let failure = self.failed();
        let writes = Writes::from(batch);
        let session = Arc::clone(&self.session);
        let slot = self.slot.take();
        let opened = self.begun.load(Ordering::Relaxed);
        self.engine.run(move |_| async move {
            let Some(slot) = slot else {
                return Err(EngineError::Backend(
                    "the transaction ended twice".to_owned(),
                ));
            };
            if let Some(failure) = failure {
                let _ = session.client.batch_execute("ROLLBACK").await;
                return Err(failure);
            }
            let outcome = async {
                // Never sent together with the writes: were it refused, they
                // would run outside any transaction.
                if !opened {
                    session.client.batch_execute(BEGIN).await?;
                }
                // The writes and the COMMIT go out together. Should a write
                // fail, the database ends the transaction without applying
                // anything and the COMMIT only rolls back; the first error
                // in statement order is the one reported.
                let (written, committed) = futures::join!(
                    write_rows(&session, &writes),
                    session.client.batch_execute("COMMIT")
                );
                written.and(committed)
            }
            .await;
            match outcome {
                Ok(()) => Ok(Durability::default()),
                Err(error) => {
                    end_failed(&slot, &session, &error).await;
                    Err(describe(&error))
                }
            }
        })
    }
}

impl Drop for PgTransaction<'_> {
    /// Not committed: rolled back before the next transaction may start.
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if !self.begun.load(Ordering::Relaxed) {
            return;
        }
        let session = Arc::clone(&self.session);
        if let Some(runtime) = self.engine.runtime.as_ref() {
            runtime.spawn(async move {
                if session.client.batch_execute("ROLLBACK").await.is_err() {
                    *slot.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                drop(slot);
            });
        }
    }
}

pub struct PostgresEngine {
    shared: Arc<Shared>,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for PostgresEngine {
    /// The last owner may be a task of another runtime, where a runtime
    /// must not be dropped by blocking on its threads.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PostgresEngine {
    /// Connects, creates the table when missing and checks the layout
    /// version. An unreachable database or wrong credentials fail here,
    /// within the connect timeout, never later.
    pub fn open(options: &PostgresOptions) -> Result<PostgresEngine, EngineError> {
        let mut config: tokio_postgres::Config = options.url.parse().map_err(|error| {
            EngineError::Config(format!("the database URL cannot be read: {error}"))
        })?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("sightline");
        }
        let target = describe_target(&config);
        let tls = match (config.get_ssl_mode(), &options.ca_file) {
            (tokio_postgres::config::SslMode::Disable, _) => None,
            (_, Some(ca_file)) => Some(super::postgres_tls::RustlsConnect::trusting(ca_file)?),
            (tokio_postgres::config::SslMode::Prefer, None) => None,
            (_, None) => {
                return Err(EngineError::Config(format!(
                    "the database URL for {target} asks for TLS (sslmode=require): \
                     give the database's CA certificates in [storage] ca_file"
                )));
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sightline-db")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            connector: Connector {
                config,
                tls,
                target,
                statement_timeout: options.statement_timeout,
            },
            readers: (0..options.read_connections.max(1))
                .map(|_| Slot::default())
                .collect(),
            next_reader: AtomicUsize::new(0),
            transactions: Arc::new(tokio::sync::Mutex::new(Slot::default())),
            batches: tokio::sync::Mutex::new(Slot::default()),
        });
        let engine = PostgresEngine {
            shared,
            runtime: Some(runtime),
        };
        engine.run(|shared| async move {
            // Servers starting together on a new database race to create
            // the tables; the losers see the winner's once they try again.
            let mut attempt = 1;
            loop {
                match prepare_schema(&shared).await {
                    Err(SchemaError::Race(_)) if attempt < COMMIT_ATTEMPTS_MAX => {
                        tokio::time::sleep(RETRY_BACKOFF_FIRST * attempt).await;
                        attempt += 1;
                    }
                    Err(SchemaError::Race(error)) => return Err(describe(&error)),
                    Err(SchemaError::Engine(error)) => return Err(error),
                    Ok(()) => return Ok(()),
                }
            }
        })?;
        Ok(engine)
    }

    /// Runs a query on the engine's runtime and waits for it, from any
    /// thread: a caller on another runtime blocks only itself.
    fn run<T, F, Fut>(&self, query: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| EngineError::Unavailable("the database engine is closed".to_owned()))?;
        // A plain channel, not the task's join handle: polled from another
        // runtime's thread, a join handle answers to that runtime's
        // cooperative budget and could wait for a wake that never comes.
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let query = query(Arc::clone(&self.shared));
        runtime.spawn(async move {
            let _ = answer.send(query.await);
        });
        let wait = || answered.recv();
        // Reads come from async handlers too: waiting there would hold a
        // worker of the server's runtime for a round trip, and with a
        // worker per core only as many reads as cores would be in flight.
        let received = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        received.map_err(|_| {
            EngineError::Unavailable("the database task ended without an answer".to_owned())
        })?
    }
}

impl Pages for PostgresEngine {
    fn page(
        &self,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
        backward: bool,
        limit: i64,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.run(move |shared| async move {
            let session = shared.reader().await?;
            query_page(&session, &from, to.as_deref(), backward, limit).await
        })
    }
}

/// Where a database URL points, for logs: host, port, database and user,
/// never the password (nor the URL's options).
pub fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => describe_target(&config),
        Err(_) => "(an unreadable database URL)".to_owned(),
    }
}

/// Host, port, database and user, for messages; never the password.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} as {}",
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default user)")
    )
}

enum SchemaError {
    /// Another server created the same table at the same moment.
    Race(tokio_postgres::Error),
    Engine(EngineError),
}

impl From<EngineError> for SchemaError {
    fn from(error: EngineError) -> Self {
        SchemaError::Engine(error)
    }
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(error: tokio_postgres::Error) -> Self {
        let racing = matches!(
            error.code(),
            Some(&SqlState::UNIQUE_VIOLATION)
                | Some(&SqlState::DUPLICATE_TABLE)
                | Some(&SqlState::DUPLICATE_OBJECT)
                | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                | Some(&SqlState::T_R_DEADLOCK_DETECTED)
        );
        if racing {
            SchemaError::Race(error)
        } else {
            SchemaError::Engine(describe(&error))
        }
    }
}

async fn prepare_schema(shared: &Shared) -> Result<(), SchemaError> {
    let client = shared.connector.client().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (name TEXT PRIMARY KEY, version BIGINT NOT NULL); \
             CREATE TABLE IF NOT EXISTS {TABLE} (key BYTEA PRIMARY KEY, value BYTEA NOT NULL)"
        ))
        .await?;
    client
        .execute(
            &format!(
                "INSERT INTO {SCHEMA_TABLE} (name, version) VALUES ('layout', $1) \
                 ON CONFLICT (name) DO NOTHING"
            ),
            &[&SCHEMA_VERSION],
        )
        .await?;
    let row = client
        .query_one(
            &format!("SELECT version FROM {SCHEMA_TABLE} WHERE name = 'layout'"),
            &[],
        )
        .await?;
    let stored: i64 = row.try_get(0)?;
    if stored > SCHEMA_VERSION {
        return Err(SchemaError::Engine(EngineError::Config(format!(
            "the database {} holds layout version {stored}, newer than this binary's {SCHEMA_VERSION}: \
             run a sightline release that reads it",
            shared.connector.target
        ))));
    }
    Ok(())
}

/// The smallest key a lower bound admits (bytea orders bytewise, so the
/// key right after `k` is `k` followed by a zero byte).
fn lower_inclusive(bound: Bound<Vec<u8>>) -> Vec<u8> {
    match bound {
        Bound::Included(key) => key,
        Bound::Excluded(mut key) => {
            key.push(0);
            key
        }
        Bound::Unbounded => Vec::new(),
    }
}

/// The first key an upper bound leaves out; `None` when nothing is.
fn upper_exclusive(bound: Bound<Vec<u8>>) -> Option<Vec<u8>> {
    match bound {
        Bound::Included(mut key) => {
            key.push(0);
            Some(key)
        }
        Bound::Excluded(key) => Some(key),
        Bound::Unbounded => None,
    }
}

/// A range read page by page, each page resuming after the last key seen.
struct PagedScan<'e> {
    source: &'e dyn Pages,
    from: Vec<u8>,
    to: Option<Vec<u8>>,
    backward: bool,
    page: std::vec::IntoIter<KeyValue>,
    next_limit: i64,
    exhausted: bool,
}

impl Iterator for PagedScan<'_> {
    type Item = Result<KeyValue, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(pair) = self.page.next() {
            return Some(Ok(pair));
        }
        if self.exhausted {
            return None;
        }
        let limit = self.next_limit;
        self.next_limit = (limit * 4).min(LARGEST_PAGE);
        let page = match self
            .source
            .page(self.from.clone(), self.to.clone(), self.backward, limit)
        {
            Ok(page) => page,
            Err(error) => {
                self.exhausted = true;
                return Some(Err(error));
            }
        };
        if (page.len() as i64) < limit {
            self.exhausted = true;
        }
        if let Some((last, _)) = page.last() {
            if self.backward {
                self.to = Some(last.clone());
            } else {
                self.from = last.clone();
                self.from.push(0);
            }
        }
        self.page = page.into_iter();
        self.page.next().map(Ok)
    }
}

impl Engine for PostgresEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let key = key.to_vec();
        self.run(move |shared| async move {
            let session = shared.reader().await?;
            query_get(&session, &key).await
        })
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        scan(self, from, to, false)
    }

    fn range_back(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        scan(self, from, to, true)
    }

    /// Sent together on one reader connection (tokio-postgres pipelines
    /// the queries of futures polled together) and awaited on the
    /// caller's runtime: no thread waits for the answers.
    fn read(&self, reads: Vec<Read>) -> Reading {
        let Some(runtime) = self.runtime.as_ref() else {
            return Box::pin(std::future::ready(Err(EngineError::Unavailable(
                "the database engine is closed".to_owned(),
            ))));
        };
        let engine_runtime = runtime.handle().clone();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let session = shared.reader_for(&engine_runtime).await?;
            futures::future::try_join_all(reads.iter().map(|read| read_one(&session, read))).await
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), EngineError> {
        let writes = Writes::from(batch);
        if writes.is_empty() {
            return Ok(());
        }
        self.run(move |shared| async move { shared.write(writes).await })
    }

    fn begin(&self) -> Result<Box<dyn Transaction + '_>, EngineError> {
        // `BEGIN` goes out with the transaction's first statement.
        let (slot, session) = self.run(|shared| async move {
            let slot = Arc::clone(&shared.transactions).lock_owned().await;
            let session = slot.session(&shared.connector).await?;
            Ok((slot, session))
        })?;
        Ok(Box::new(PgTransaction {
            engine: self,
            session,
            slot: Some(slot),
            failure: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
            prefixes_seen: Mutex::new(HashMap::new()),
            begun: AtomicBool::new(false),
        }))
    }

    /// Several servers may share one database.
    fn shared(&self) -> bool {
        true
    }

    /// A batch is durable when its `COMMIT` returns.
    fn sync(&self) -> Result<Durability, EngineError> {
        Ok(Durability::default())
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        self.run(|shared| async move {
            let session = shared.reader().await?;
            let row = session
                .client
                .query_one(
                    &format!("SELECT pg_total_relation_size('{TABLE}')::BIGINT"),
                    &[],
                )
                .await?;
            let bytes: i64 = row.try_get(0)?;
            Ok(bytes.max(0) as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_become_an_inclusive_start_and_an_exclusive_end() {
        assert_eq!(
            lower_inclusive(Bound::Excluded(b"a".to_vec())),
            b"a\0".to_vec()
        );
        assert_eq!(lower_inclusive(Bound::Unbounded), Vec::<u8>::new());
        assert_eq!(
            upper_exclusive(Bound::Included(b"b".to_vec())),
            Some(b"b\0".to_vec())
        );
        assert_eq!(upper_exclusive(Bound::Unbounded), None);
    }

    #[test]
    fn messages_name_the_database_but_not_the_password() {
        let config: tokio_postgres::Config = "postgres://shop:s3cret@db.example:6543/profiles"
            .parse()
            .expect("url");
        let target = describe_target(&config);
        assert_eq!(target, "db.example:6543/profiles as shop");
        assert!(!target.contains("s3cret"));
    }
}
