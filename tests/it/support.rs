//! A real server per test, and small helpers to build requests.

use std::{net::SocketAddr, sync::Arc};

use sightline::api::pb::{
    self, check_membership_request, get_profile_request::Lookup,
    profile_service_client::ProfileServiceClient, segment_service_client::SegmentServiceClient,
};
use sightline::cli::{BearerToken, ProfileClient, profile_client};
use sightline::config::Config;
use sightline::model::{Clock, SystemClock};
use sightline::server::ServerError;
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub type Client = ProfileServiceClient<Channel>;

/// Listeners a test server gets besides gRPC, each bound on an ephemeral
/// loopback port before the server starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    pub http: bool,
    pub metrics: bool,
}

pub struct TestServer {
    pub address: SocketAddr,
    /// The HTTP API's address, when started with one.
    pub http_address: Option<SocketAddr>,
    /// The metrics endpoint's port, when started with one.
    pub metrics_port: Option<u16>,
    data_dir: TempDir,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

/// The configuration every test starts from: UK phone numbers by default,
/// and the engine the suite runs on.
pub fn test_config(data_dir: &TempDir) -> Config {
    let mut config = Config {
        data_dir: data_dir.path().to_owned(),
        ..Config::default()
    };
    config.identity.default_region = "GB".to_owned();
    config.storage.url = database_url(data_dir.path());
    config.privacy.master_key_file = test_master_key_file();
    config
}

/// On PostgreSQL, one master key for the whole run, so that servers and
/// restores that share a database share its key too; on the embedded
/// engine each data directory generates its own.
pub fn test_master_key_file() -> Option<std::path::PathBuf> {
    postgres_server()?;
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    Some(
        FILE.get_or_init(|| {
            let path = std::env::temp_dir()
                .join(format!("sightline-test-master-{}.key", std::process::id()));
            let key = sightline::store::sealing::cipher::SecretKey::random();
            std::fs::write(&path, key.to_hex()).expect("write the test master key");
            path
        })
        .clone(),
    )
}

/// How a store opened by a test outside the server seals its values.
pub fn sealing_options(data_dir: &std::path::Path) -> sightline::store::SealingOptions {
    use sightline::store::sealing::master::{GENERATED_MASTER_KEY_FILE, MasterKeySource};
    sightline::store::SealingOptions {
        master_key: match test_master_key_file() {
            Some(path) => MasterKeySource::File(path),
            None => MasterKeySource::Generated(data_dir.join(GENERATED_MASTER_KEY_FILE)),
        },
        key_store_file: data_dir.join(sightline::store::KEY_STORE_FILE),
        seal_values: true,
    }
}

/// The PostgreSQL server the suite runs against (`scripts/test-postgres`
/// starts one and sets this), or `None` for the embedded engine.
pub fn postgres_server() -> Option<String> {
    std::env::var("SIGHTLINE_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// On PostgreSQL, the database standing for this data directory: one per
/// directory, created when first asked for, so that a test restarting a
/// server on its directory finds its data again.
pub fn database_url(data_dir: &std::path::Path) -> Option<String> {
    let server = postgres_server()?;
    let name = format!(
        "t{:016x}",
        xxhash_rust::xxh3::xxh3_64(data_dir.as_os_str().as_encoded_bytes())
    );
    let admin = server.clone();
    let create = name.clone();
    with_database(admin, move |client| async move {
        match client
            .batch_execute(&format!("CREATE DATABASE {create}"))
            .await
        {
            Ok(()) => {}
            Err(error)
                if error.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(error) => panic!("create the test database: {error}"),
        }
    });
    let base = server
        .rsplit_once('/')
        .map(|(base, _)| base.to_owned())
        .unwrap_or(server);
    Some(format!("{base}/{name}"))
}

impl TestServer {
    pub async fn start() -> TestServer {
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        TestServer::start_in(data_dir).await
    }

    /// Starts with a higher per-profile limit for one identifier kind, for
    /// tests about something other than merge protection.
    pub async fn start_allowing(kind: &str, per_profile_max: usize) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let mut config = test_config(&data_dir);
        config
            .identity
            .merge
            .identifiers_per_kind_max
            .insert(kind.to_owned(), per_profile_max);
        TestServer::start_with(data_dir, config).await
    }

    /// Starts on an existing data directory, e.g. one a stopped server left.
    pub async fn start_in(data_dir: TempDir) -> TestServer {
        let config = test_config(&data_dir);
        TestServer::start_with(data_dir, config).await
    }

    pub async fn start_with(data_dir: TempDir, config: Config) -> TestServer {
        TestServer::start_with_clock(data_dir, config, Arc::new(SystemClock)).await
    }

    /// Starts with a clock the test sets, so that time-dependent traits can
    /// be checked without sleeping.
    pub async fn start_with_clock(
        data_dir: TempDir,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> TestServer {
        TestServer::launch(data_dir, config, clock, Extras::default()).await
    }

    /// Starts with the HTTP API on an ephemeral loopback port too.
    pub async fn start_with_http(data_dir: TempDir, config: Config) -> TestServer {
        let extras = Extras {
            http: true,
            metrics: false,
        };
        TestServer::launch(data_dir, config, Arc::new(SystemClock), extras).await
    }

    /// Starts with listeners of its own for the HTTP API and the metrics
    /// endpoint, as asked.
    pub async fn start_with_extras(
        data_dir: TempDir,
        config: Config,
        extras: Extras,
    ) -> TestServer {
        TestServer::launch(data_dir, config, Arc::new(SystemClock), extras).await
    }

    async fn launch(
        data_dir: TempDir,
        config: Config,
        clock: Arc<dyn Clock>,
        extras: Extras,
    ) -> TestServer {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let listener = bind().await.expect("bind loopback");
        let address = listener.local_addr().expect("local address");
        let http = match extras.http {
            true => Some(bind().await.expect("bind loopback")),
            false => None,
        };
        let metrics = match extras.metrics {
            true => Some(bind().await.expect("bind loopback")),
            false => None,
        };
        let http_address = http
            .as_ref()
            .map(|listener| listener.local_addr().expect("local address"));
        let metrics_port = metrics
            .as_ref()
            .map(|listener| listener.local_addr().expect("local address").port());
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = sightline::server::Listeners {
            grpc: listener,
            http,
            metrics,
        };
        let task = tokio::spawn(sightline::server::run_on(listeners, config, clock, async {
            let _ = stopped.await;
        }));
        TestServer {
            address,
            http_address,
            metrics_port,
            data_dir,
            stop,
            task,
        }
    }

    pub async fn client(&self) -> Client {
        let endpoint = format!("http://{}", self.address);
        for _ in 0..100 {
            if let Ok(client) = ProfileServiceClient::connect(endpoint.clone()).await {
                return client;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("server at {endpoint} did not accept connections");
    }

    /// A client whose calls carry `authorization: Bearer <token>`.
    pub async fn client_with_token(&self, token: &str) -> ProfileClient {
        // Waits until the server accepts connections.
        let _ = self.client().await;
        let token = BearerToken::new(Some(token)).expect("token is a header value");
        profile_client(self.channel().await, token)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    /// Stops gracefully and hands back the data directory.
    pub async fn stop(self) -> TempDir {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("server stopped cleanly");
        self.data_dir
    }
}

pub fn id(kind: &str, value: &str) -> pb::Identifier {
    pb::Identifier {
        kind: kind.to_owned(),
        value: value.to_owned(),
    }
}

pub fn email(value: &str) -> pb::Identifier {
    id("email", value)
}

pub fn phone(value: &str) -> pb::Identifier {
    id("phone", value)
}

pub fn user(value: &str) -> pb::Identifier {
    id("user_id", value)
}

pub fn traits(pairs: &[(&str, prost_types::Value)]) -> Option<prost_types::Struct> {
    Some(prost_types::Struct {
        fields: pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
    })
}

pub fn text(value: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(value.to_owned())),
    }
}

pub fn number(value: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(value)),
    }
}

pub fn at_seconds(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

pub fn identify(identifiers: Vec<pb::Identifier>) -> pb::IdentifyRequest {
    pb::IdentifyRequest {
        identifiers,
        ..Default::default()
    }
}

pub fn track(identifiers: Vec<pb::Identifier>, event: &str) -> pb::TrackRequest {
    pb::TrackRequest {
        identifiers,
        event: event.to_owned(),
        ..Default::default()
    }
}

pub async fn get_by(
    client: &mut Client,
    identifier: pb::Identifier,
) -> Result<pb::Profile, tonic::Status> {
    get(client, Lookup::Identifier(identifier)).await
}

pub async fn get_by_id(
    client: &mut Client,
    profile_id: &str,
) -> Result<pb::Profile, tonic::Status> {
    get(client, Lookup::ProfileId(profile_id.to_owned())).await
}

async fn get(client: &mut Client, lookup: Lookup) -> Result<pb::Profile, tonic::Status> {
    let response = client
        .get_profile(pb::GetProfileRequest {
            lookup: Some(lookup),
            events_limit: 1000,
        })
        .await?;
    Ok(response.into_inner().profile.expect("profile in response"))
}

/// `kind:value` of every identifier on the profile, sorted.
pub fn identifier_values(profile: &pb::Profile) -> Vec<String> {
    let mut values: Vec<String> = profile
        .identifiers
        .iter()
        .filter_map(|record| record.identifier.as_ref())
        .map(|identifier| format!("{}:{}", identifier.kind, identifier.value))
        .collect();
    values.sort();
    values
}

pub fn trait_text(profile: &pb::Profile, name: &str) -> Option<String> {
    let value = profile.traits.as_ref()?.fields.get(name)?;
    match &value.kind {
        Some(prost_types::value::Kind::StringValue(text)) => Some(text.clone()),
        other => Some(format!("{other:?}")),
    }
}

/// A loopback port free when asked (another process may take it before
/// it is bound again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

/// A running server binary, killed when dropped so that a failing test
/// leaves no server behind.
pub struct ServerProcess(std::process::Child);

impl std::ops::Deref for ServerProcess {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Already gone after a test's own kill or stop: nothing to do.
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The real binary, as an operator runs it, on a port the system picks
/// (read back from its log, so no other process can take it in between).
pub fn spawn_binary(data_dir: &std::path::Path) -> (ServerProcess, u16) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data_dir)
        .args(
            database_url(data_dir)
                .map(|url| ["--store".to_owned(), url])
                .into_iter()
                .flatten(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the sightline binary");
    let stderr = child.stderr.take().expect("stderr");
    let child = ServerProcess(child);
    let (found, port) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        // Read to the end: a full pipe would stall the server.
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let listening = line
                .contains(" serving ")
                .then(|| line.split("address=127.0.0.1:").nth(1))
                .flatten()
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse::<u16>().ok());
            if let (Some(port), Some(sender)) = (listening, found.as_ref()) {
                let _ = sender.send(port);
                found = None;
            }
        }
    });
    let port = port
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the binary logs the address it serves on");
    (child, port)
}

pub async fn connect_port(port: u16) -> Client {
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..250 {
        if let Ok(client) = Client::connect(endpoint.clone()).await {
            return client;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("binary did not start listening on {endpoint}");
}

/// Adds a token with these scopes to the configuration and returns it.
pub fn add_token(config: &mut Config, name: &str, scopes: &[sightline::security::Scope]) -> String {
    let token = sightline::security::generate_token().expect("random token");
    config.auth.tokens.push(sightline::config::TokenConfig {
        name: name.to_owned(),
        scopes: scopes.to_vec(),
        sha256: sightline::security::hash_token(&token).to_string(),
    });
    token
}

/// Runs `query` with a connection to `url`, off the test's runtime:
/// tokio-postgres needs one of its own here.
fn with_database<T, F, Fut>(url: String, query: F) -> T
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test PostgreSQL server");
            tokio::spawn(connection);
            query(client).await
        })
    })
    .join()
    .expect("the database helper thread")
}

/// Every key and value a stopped server left in its engine, read beside
/// the server's own code: sled's trees, or the PostgreSQL table.
pub fn stored_pairs(data_dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    if let Some(url) = database_url(data_dir) {
        return with_database(url, |client| async move {
            client
                .query("SELECT key, value FROM sightline_kv ORDER BY key", &[])
                .await
                .expect("read the table")
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect()
        });
    }
    // sled's background threads let go of the directory lock moments after
    // the server closed it.
    let mut opened = sled::open(data_dir);
    for _ in 0..100 {
        if opened.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        opened = sled::open(data_dir);
    }
    let db = opened.expect("open the stopped server's database");
    let mut pairs = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).expect("tree");
        for entry in tree.iter() {
            let (key, value) = entry.expect("entry");
            pairs.push((key.to_vec(), value.to_vec()));
        }
    }
    pairs
}

/// Every key and value a stopped server left, values opened with its key
/// store through the store's own code.
pub fn opened_pairs(data_dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut config = test_config(&scratch);
    config.data_dir = data_dir.to_owned();
    config.storage.url = database_url(data_dir);
    let rules =
        sightline::identity::MergeRules::new(&config.identity.merge, &config.identity.fuzzy);
    let options = sightline::server::store_options(&config, rules).expect("store options");
    let mut opened = sightline::store::SledStore::opened_pairs(&options);
    // sled lets go of the directory lock moments after the server closed.
    for _ in 0..100 {
        if opened.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        opened = sightline::store::SledStore::opened_pairs(&options);
    }
    opened.expect("open the stopped server's store")
}

/// The keyed hash that stands for an identifier in the provenance of a
/// stopped server's records, as stored.
pub fn provenance_hash(data_dir: &std::path::Path, kind: &str, value: &str) -> [u8; 8] {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut config = test_config(&scratch);
    config.data_dir = data_dir.to_owned();
    config.storage.url = database_url(data_dir);
    let identifier = sightline::identity::Normalizer::new(&config.identity, 256)
        .normalize(kind, value)
        .expect("a valid identifier");
    let rules =
        sightline::identity::MergeRules::new(&config.identity.merge, &config.identity.fuzzy);
    let options = sightline::server::store_options(&config, rules).expect("store options");
    sightline::store::SledStore::provenance_hash_bytes(&options, &identifier)
        .expect("open the stopped server's store")
}

/// A PostgreSQL cluster of one test's own, for tests that stop and start
/// the database (the suite's shared server must stay up for the others).
/// Built from the same server binaries `scripts/test-postgres` uses.
pub struct PrivateCluster {
    bin: std::path::PathBuf,
    dir: TempDir,
    pub port: u16,
    tls_only: bool,
}

impl PrivateCluster {
    /// `None` when the suite runs on sled.
    pub fn start() -> Option<PrivateCluster> {
        PrivateCluster::start_with(false)
    }

    /// A cluster that takes TLS connections only, with a certificate for
    /// 127.0.0.1 issued by the CA whose PEM file is returned too.
    pub fn start_tls_only() -> Option<(PrivateCluster, std::path::PathBuf)> {
        let cluster = PrivateCluster::start_with(true)?;
        let ca = cluster.dir.path().join("ca.pem");
        Some((cluster, ca))
    }

    fn start_with(tls_only: bool) -> Option<PrivateCluster> {
        postgres_server()?;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max()
            .expect("pg_ctl");
        let dir = tempfile::tempdir().expect("cluster dir");
        let mut cluster = PrivateCluster {
            bin,
            dir,
            port: free_port(),
            tls_only: false,
        };
        if is_root() {
            let _ = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(cluster.dir.path())
                .status();
        }
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", &data, "-U", "sightline", "--auth=trust", "-E", "UTF8"],
        );
        if tls_only {
            cluster.issue_certificate();
            std::fs::write(
                cluster.dir.path().join("data/pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("pg_hba.conf");
        }
        cluster.tls_only = tls_only;
        cluster.ctl("start");
        Some(cluster)
    }

    fn issue_certificate(&self) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let ca = rcgen::Issuer::new(ca_params, ca_key);
        let server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let server_key = rcgen::KeyPair::generate().expect("key");
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .expect("certificate");
        let dir = self.dir.path();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca.pem");
        std::fs::write(dir.join("server.pem"), server_cert.pem()).expect("server.pem");
        let key = dir.join("server.key");
        std::fs::write(&key, server_key.serialize_pem()).expect("server.key");
        // PostgreSQL takes a key only its owner can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        if is_root() {
            let _ = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir)
                .status();
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://sightline@127.0.0.1:{}/postgres", self.port)
    }

    pub fn stop(&self) {
        self.ctl("stop");
    }

    pub fn restart(&self) {
        self.ctl("start");
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn ctl(&self, action: &str) {
        let data = self.data();
        let log = self.dir.path().join("log").display().to_string();
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        );
        if self.tls_only {
            let dir = self.dir.path().display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.pem -c ssl_key_file={dir}/server.key"
            ));
        }
        let mut args = vec!["-D", &data, "-l", &log, "-w", "-o", &options];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        self.run("pg_ctl", &args);
    }

    /// PostgreSQL refuses to run as root; as root, it runs as `postgres`.
    fn command(&self, tool: &str) -> std::process::Command {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        };
        command.stdout(std::process::Stdio::null());
        command
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let status = self.command(tool).args(args).status();
        assert!(status.expect(tool).success(), "{tool} {args:?} failed");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|output| output.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// A profile's memberships (segment id, held out) through `CheckMembership`.
pub async fn memberships(
    segments: &mut SegmentServiceClient<Channel>,
    who: pb::Identifier,
) -> Vec<(String, bool)> {
    segments
        .check_membership(pb::CheckMembershipRequest {
            lookup: Some(check_membership_request::Lookup::Identifier(who)),
        })
        .await
        .expect("check membership")
        .into_inner()
        .memberships
        .into_iter()
        .map(|m| (m.segment_id, m.holdout))
        .collect()
}

/// A segment's members (profile id, held out) through `ListMembers`.
pub async fn members(
    segments: &mut SegmentServiceClient<Channel>,
    id: &str,
    include_holdout: bool,
) -> Vec<(String, bool)> {
    let mut stream = segments
        .list_members(pb::ListMembersRequest {
            segment_id: id.to_owned(),
            include_holdout,
            ..Default::default()
        })
        .await
        .expect("list members")
        .into_inner();
    let mut listed = Vec::new();
    while let Some(member) = stream.message().await.expect("member") {
        listed.push((member.profile_id, member.holdout));
    }
    listed
}
