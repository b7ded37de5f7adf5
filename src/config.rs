//! Typed configuration: a TOML file, every field optional with a stated
//! default, command-line flags override the file.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, str::FromStr};

use serde::Deserialize;

use crate::security::{Caller, Scope, TokenHash, TokenSet, valid_token_name};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Says where and what, never the text of the line: a configuration
    /// file may hold secrets (a pasted token, a key).
    #[error("invalid config file {}: {where_}{message}", path.display())]
    Parse {
        path: PathBuf,
        where_: String,
        message: String,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error(
        "refusing to serve on {address} without {missing}: anyone who can reach it could \
         read and change every profile. Configure [tls] and [auth] tokens, bind a loopback \
         address, or pass --insecure to accept the risk"
    )]
    Exposed {
        address: SocketAddr,
        missing: &'static str,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC server listens on. Loopback by default.
    pub listen: SocketAddr,
    /// Directory of the embedded database.
    pub data_dir: PathBuf,
    pub identity: IdentityConfig,
    pub limits: Limits,
    pub storage: StorageConfig,
    pub computed: ComputedConfig,
    pub segments: SegmentsConfig,
    pub recommendations: RecommendationsConfig,
    pub privacy: PrivacyConfig,
    pub auth: AuthConfig,
    /// Serve TLS when set; otherwise plaintext.
    pub tls: Option<TlsConfig>,
    /// Serve on a non-loopback address without TLS or without tokens. Set
    /// only by `serve --insecure`, never from a file, so a copied config
    /// cannot quietly switch the check off.
    #[serde(skip)]
    pub allow_insecure: bool,
    pub metrics: MetricsConfig,
    pub http: HttpConfig,
}

/// Data-subject requests: suppression, the access log, and the Art. 15
/// information every export carries.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Hex secret (at least 16 bytes) behind the keyed hashes of suppressed
    /// identifiers. When unset, a random one is generated at first start and
    /// kept in the database; set it to keep the secret apart from the data.
    pub suppression_key: Option<String>,
    /// The file holding the master key (64 hex digits) that seals every
    /// person's data key. When unset (and `SIGHTLINE_MASTER_KEY` is not
    /// set either), one is generated at first start as `master.key` in the
    /// data directory: move it apart from the data and name it here.
    pub master_key_file: Option<PathBuf>,
    /// The file of data keys on the embedded engine; `keys` in the data
    /// directory when unset. On a PostgreSQL-wire database the keys are
    /// rows of the database.
    pub key_store_file: Option<PathBuf>,
    /// Benchmarks only: store values unsealed, to measure what sealing
    /// costs. Not settable from the configuration file.
    #[serde(skip)]
    pub unsealed_for_benchmarks: bool,
    /// Reads of a profile are logged for this many days; 0 keeps them until
    /// the profile is erased.
    pub access_log_retention_days: i64,
    /// Why the data is processed.
    pub purposes: Vec<String>,
    /// Who receives it.
    pub recipients: Vec<String>,
    /// How long it is kept, in words.
    pub retention: String,
    /// Where it comes from, beyond the sources recorded per item.
    pub sources: Vec<String>,
    /// Who to contact (the controller or its data protection officer).
    pub controller_contact: String,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            suppression_key: None,
            master_key_file: None,
            key_store_file: None,
            unsealed_for_benchmarks: false,
            access_log_retention_days: 365,
            purposes: vec![
                "Maintaining a single customer profile across systems".to_owned(),
                "Personalisation and marketing, where consent was given".to_owned(),
                "Analytics of customer behaviour".to_owned(),
            ],
            recipients: vec!["Internal services of the controller".to_owned()],
            retention: "Kept while the customer relationship lasts, or until erasure is requested"
                .to_owned(),
            sources: vec![
                "Provided by the data subject".to_owned(),
                "Collected from the data subject's use of websites, apps and emails".to_owned(),
            ],
            controller_contact: String::new(),
        }
    }
}

impl PrivacyConfig {
    pub fn suppression_key_bytes(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(text) = &self.suppression_key else {
            return Ok(None);
        };
        let invalid = || {
            ConfigError::Invalid(
                "privacy.suppression_key: expected at least 32 hex digits".to_owned(),
            )
        };
        if text.len() < 32 || text.len() % 2 != 0 {
            return Err(invalid());
        }
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).map_err(|_| invalid()))
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
    }
}

/// Segment definitions and their upkeep.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentsConfig {
    /// Segments that may be defined at once.
    pub segments_max: usize,
    /// Length of a rule's source text.
    pub rule_bytes_max: usize,
    /// How often rules that depend on time (`now`, computed traits, event
    /// windows) are re-evaluated over every profile; 0 only on demand
    /// (`RunMaintenance`).
    pub sweep_interval_secs: u64,
    /// User-defined computed traits that may be defined at once.
    pub computed_traits_max: usize,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            segments_max: 100,
            rule_bytes_max: 4096,
            sweep_interval_secs: 3600,
            computed_traits_max: 50,
        }
    }
}

/// Product recommendations.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecommendationsConfig {
    /// Keep product histories and the counts recommendations rank by; off,
    /// the recommendation calls answer FAILED_PRECONDITION.
    pub enabled: bool,
    /// Personalise for people who have made no decision on the
    /// `personalisation` purpose (an opt-out regime). By default only a
    /// grant on some channel allows it; a withdrawal always stops it.
    pub personalise_without_consent: bool,
    /// Products per call, at most.
    pub limit_max: usize,
    /// Products per `PutProducts` call, at most.
    pub products_per_upload_max: usize,
}

impl Default for RecommendationsConfig {
    fn default() -> Self {
        RecommendationsConfig {
            enabled: true,
            personalise_without_consent: false,
            limit_max: 100,
            products_per_upload_max: 1000,
        }
    }
}

/// Bearer tokens and their scopes. No tokens: authentication is off, which
/// is allowed on loopback addresses only (see [`Config::exposure`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

/// One token as `sightline token create` prints it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in access logs; `[A-Za-z0-9_.-]`, at most 64 bytes, unique.
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the token: the token itself is never stored.
    pub sha256: String,
}

/// Certificates in PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// When set, clients must present a certificate signed by this CA
    /// (mutual TLS).
    pub client_ca_path: Option<PathBuf>,
}

/// How the server is exposed, once [`Config::exposure`] has allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Loopback without tokens: any local process may call everything.
    LoopbackWithoutAuth,
    /// Tokens are required; on a non-loopback address TLS protects them.
    Protected,
    /// A non-loopback address without TLS or tokens, allowed by `--insecure`.
    Insecure,
}

/// The Prometheus scrape endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address serving `GET /metrics`; none (the default) serves no metrics.
    pub listen: Option<SocketAddr>,
}

/// The HTTP/JSON listener: the Segment-spec tracking API and profile reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address serving HTTP/1.1; none (the default) serves no HTTP. The
    /// exposure rules of the gRPC listener apply: loopback, or TLS and
    /// tokens.
    pub listen: Option<SocketAddr>,
    /// Largest message of the tracking API, in bytes (Segment's limit: 32 KB).
    pub message_bytes_max: usize,
    /// Largest request body of `/v1/batch` and `/v1/import`, in bytes, after
    /// decompression (Segment's limit: 500 KB).
    pub batch_bytes_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            message_bytes_max: 32 * 1024,
            batch_bytes_max: 500 * 1024,
        }
    }
}

/// Thresholds of the computed traits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputedConfig {
    /// An order within this many days makes a customer `active`.
    pub active_days: i64,
    /// Beyond `active_days` and up to this: `lapsing`; beyond: `inactive`.
    pub lapsing_days: i64,
    /// Events older than this are removed by the maintenance job (lifetime
    /// aggregates stay); 0 keeps events forever.
    pub event_retention_days: i64,
    /// How often the maintenance job refreshes the RFM quintiles and applies
    /// retention; 0 runs it only on demand (`RunMaintenance`).
    pub maintenance_interval_secs: u64,
}

impl Default for ComputedConfig {
    fn default() -> Self {
        let defaults = crate::computed::LifecycleThresholds::default();
        ComputedConfig {
            active_days: defaults.active_days,
            lapsing_days: defaults.lapsing_days,
            event_retention_days: 0,
            maintenance_interval_secs: 3600,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./sightline-data"),
            identity: IdentityConfig::default(),
            limits: Limits::default(),
            storage: StorageConfig::default(),
            computed: ComputedConfig::default(),
            segments: SegmentsConfig::default(),
            recommendations: RecommendationsConfig::default(),
            privacy: PrivacyConfig::default(),
            auth: AuthConfig::default(),
            tls: None,
            allow_insecure: false,
            metrics: MetricsConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// ISO 3166 alpha-2 region used to read phone numbers written without a
    /// country code (`020 7946 0958` with `GB`).
    pub default_region: String,
    /// Fold provider-specific email aliases (dots and `+tags` at gmail.com and
    /// googlemail.com) into one address. Off by default because it merges
    /// addresses the person may consider distinct.
    pub fold_email_aliases: bool,
    /// Further identifier kinds accepted besides the built-in ones
    /// (`[a-z][a-z0-9_]*`); their values are trimmed and otherwise kept as sent.
    pub custom_kinds: Vec<String>,
    pub merge: MergeConfig,
    pub fuzzy: FuzzyConfig,
}

/// Fuzzy matching of profiles that share no identifier (names, birthday,
/// address), run on every identify that changes those traits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FuzzyConfig {
    pub enabled: bool,
    /// Match probability (0..1) at or above which a pair merges
    /// automatically. The probability comes from a model estimated from
    /// the stored data, so 0.999 means about one wrong merge in a thousand
    /// at worst, on any data.
    pub auto_merge_probability_min: f64,
    /// Match probability at or above which a pair is listed for review.
    pub review_probability_min: f64,
    /// The model is re-estimated once the profiles with names reach this
    /// many, and again each time their number doubles.
    pub estimate_profiles_min: u64,
}

impl Default for FuzzyConfig {
    fn default() -> Self {
        let thresholds = crate::identity::fuzzy::MatchThresholds::default();
        FuzzyConfig {
            enabled: true,
            auto_merge_probability_min: thresholds.auto_merge,
            review_probability_min: thresholds.review,
            estimate_profiles_min: 100,
        }
    }
}

/// Merge protection: what keeps dirty data from producing super-profiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergeConfig {
    /// Identifier kinds from strongest to weakest evidence of identity.
    /// Kinds not listed rank below every listed kind.
    pub priority: Vec<String>,
    /// Most identifiers of a kind one profile may hold; a merge or attach
    /// that would exceed it does not happen. Kinds not listed use
    /// `identifiers_per_kind_default`.
    pub identifiers_per_kind_max: BTreeMap<String, usize>,
    pub identifiers_per_kind_default: usize,
    /// An identifier whose links were blocked for this many distinct
    /// profiles (a shared tablet, a call-centre number) is a hub: it is no
    /// longer used to resolve calls at all.
    pub hub_profiles_min: usize,
    /// Junk values never used for matching, as `kind:value` after
    /// normalization.
    pub blocked_values: Vec<String>,
    /// Junk patterns: regular expressions matched against the normalized
    /// value of the given kind.
    pub blocked_patterns: Vec<BlockedPattern>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockedPattern {
    pub kind: String,
    pub regex: String,
}

impl Default for MergeConfig {
    fn default() -> Self {
        let pattern = |kind: &str, regex: &str| BlockedPattern {
            kind: kind.to_owned(),
            regex: regex.to_owned(),
        };
        MergeConfig {
            priority: ["user_id", "email", "phone", "device_id", "anonymous_id"]
                .map(str::to_owned)
                .to_vec(),
            identifiers_per_kind_max: [
                ("user_id", 1),
                ("email", 5),
                ("phone", 5),
                ("device_id", 20),
                ("anonymous_id", 50),
            ]
            .into_iter()
            .map(|(kind, max)| (kind.to_owned(), max))
            .collect(),
            identifiers_per_kind_default: 10,
            hub_profiles_min: 5,
            blocked_values: [
                "email:test@example.com",
                "email:test@test.com",
                "email:noemail@noemail.com",
                "user_id:0",
                "user_id:null",
                "user_id:undefined",
                "user_id:unknown",
                "anonymous_id:null",
                "anonymous_id:undefined",
            ]
            .map(str::to_owned)
            .to_vec(),
            blocked_patterns: vec![
                // Placeholder mailboxes typed into forms and QA scripts.
                pattern(
                    "email",
                    r"^(test|testing|noreply|no-reply|donotreply|do-not-reply|none|null|unknown|asdf|xxx+)@",
                ),
                pattern("email", r"@(test\.com|invalid|localhost)$"),
                // One digit repeated, e.g. +440000000000 or +11111111111.
                pattern("phone", r"^\+\d{1,3}(0{6,}|1{6,}|9{6,})$"),
                pattern("phone", r"^\+\d{0,3}1234567890?$"),
                // All-zero advertising ids and placeholders.
                pattern("device_id", r"^[0-]+$"),
                pattern(
                    "device_id",
                    r"^(null|undefined|unknown|none|n/a|test|default)$",
                ),
                pattern("anonymous_id", r"^[0-]+$"),
            ],
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            default_region: "US".to_owned(),
            fold_email_aliases: false,
            custom_kinds: Vec::new(),
            merge: MergeConfig::default(),
            fuzzy: FuzzyConfig::default(),
        }
    }
}

/// Upper bounds on everything a caller can make grow.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub identifiers_per_call_max: usize,
    pub identifier_value_bytes_max: usize,
    /// Size of a call's traits, measured as compact JSON.
    pub traits_bytes_max: usize,
    /// Size of an event's properties, measured as compact JSON.
    pub properties_bytes_max: usize,
    /// Nesting depth of trait and property values.
    pub value_depth_max: usize,
    pub trait_name_bytes_max: usize,
    pub event_name_bytes_max: usize,
    pub message_id_bytes_max: usize,
    pub source_bytes_max: usize,
    /// Per-item errors returned by one `Ingest` call; further rejections are
    /// counted only.
    pub ingest_errors_max: usize,
    /// Events returned by `GetProfile` when the request does not say.
    pub events_per_read_default: usize,
    pub events_per_read_max: usize,
    /// Largest request message accepted (each message of a stream counts
    /// on its own); larger ones are refused with OUT_OF_RANGE.
    pub request_message_bytes_max: usize,
    /// Largest response message sent; a larger one fails the call.
    pub response_message_bytes_max: usize,
    /// Time a call may take before it is answered DEADLINE_EXCEEDED: until
    /// the response for unary calls, until the first message for
    /// server-streaming ones. Client-streaming calls (`Ingest`) are not
    /// cut: an import may stream for as long as it has data.
    pub call_timeout_ms: u64,
    /// On SIGTERM, how long calls in flight may take to finish; open
    /// `Ingest` streams are ended at once, with what they sent made
    /// durable, and answered UNAVAILABLE.
    pub shutdown_drain_ms: u64,
    /// How far ahead of the server's clock an event or consent time may
    /// be; later times are refused (INVALID_ARGUMENT), since a time in the
    /// future would outrank every decision made until then.
    pub future_skew_secs: u64,
    /// Calls being served at once, streams counted while open; calls
    /// beyond it are answered RESOURCE_EXHAUSTED at once. Health checks
    /// are not counted, so an overloaded server still reports itself alive.
    pub calls_in_flight_max: usize,
    /// HTTP/2 streams one connection may open at once. As high as
    /// `calls_in_flight_max` by default, so that the overload answer comes
    /// from the shedding above rather than from clients queueing silently.
    pub streams_per_connection_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            identifiers_per_call_max: 20,
            identifier_value_bytes_max: 256,
            traits_bytes_max: 64 * 1024,
            properties_bytes_max: 64 * 1024,
            value_depth_max: 16,
            trait_name_bytes_max: 128,
            event_name_bytes_max: 200,
            message_id_bytes_max: 128,
            source_bytes_max: 128,
            ingest_errors_max: 1000,
            events_per_read_default: 20,
            events_per_read_max: 1000,
            request_message_bytes_max: 4 * 1024 * 1024,
            response_message_bytes_max: 64 * 1024 * 1024,
            call_timeout_ms: 30_000,
            shutdown_drain_ms: 5_000,
            future_skew_secs: 300,
            calls_in_flight_max: 2048,
            streams_per_connection_max: 2048,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// sled's page cache. Identity lookups and fuzzy matching read randomly
    /// across the whole store; at a million profiles a cache much smaller
    /// than 1 GiB makes each identify several times slower.
    pub cache_capacity_bytes: u64,
    /// Write commands waiting for the writer before callers wait for room.
    pub write_queue_depth: usize,
    /// Calls applied and made durable together in one group commit.
    pub group_commit_calls_max: usize,
    /// A PostgreSQL-wire database to keep the data in instead of the
    /// embedded one: `postgres://user@host:port/database`.
    pub url: Option<String>,
    /// When set, backups are written only into directories under it.
    pub backup_dir: Option<PathBuf>,
    /// Connections to that database for reads (one more writes).
    pub pool_size: usize,
    /// How long one statement may run before the database cancels it.
    pub statement_timeout_ms: u64,
    /// How long to wait for the database at start and on each reconnect.
    pub connect_timeout_ms: u64,
    /// The database's CA certificates (PEM), for TLS to it: needed when
    /// the URL says `sslmode=require`.
    pub ca_file: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_capacity_bytes: 1024 * 1024 * 1024,
            write_queue_depth: 1024,
            group_commit_calls_max: 2048,
            url: None,
            backup_dir: None,
            pool_size: 4,
            statement_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

impl Config {
    /// Reads a config file; fields it does not set keep their defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            where_: error
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
                    format!("line {line}, column {column}: ")
                })
                .unwrap_or_default(),
            message: without_quoted_values(error.message()),
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        phonenumber::country::Id::from_str(&self.identity.default_region).map_err(|_| {
            ConfigError::Invalid(format!(
                "identity.default_region `{}` is not an ISO 3166 alpha-2 region",
                self.identity.default_region
            ))
        })?;
        for kind in &self.identity.custom_kinds {
            let well_formed = kind.starts_with(|c: char| c.is_ascii_lowercase())
                && kind
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && kind.len() <= 64;
            if !well_formed {
                return Err(ConfigError::Invalid(format!(
                    "identity.custom_kinds: `{kind}` must match [a-z][a-z0-9_]* (at most 64 bytes)"
                )));
            }
            if crate::model::IdentifierKind::built_in(kind).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "identity.custom_kinds: `{kind}` is a built-in kind"
                )));
            }
        }
        if self.computed.active_days <= 0 || self.computed.lapsing_days < self.computed.active_days
        {
            return Err(ConfigError::Invalid(
                "computed: 0 < active_days <= lapsing_days, event_retention_days >= 0".to_owned(),
            ));
        }
        self.privacy.suppression_key_bytes()?;
        if let Some(url) = &self.storage.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(
                "storage.url must be a postgres:// or postgresql:// URL".to_owned(),
            ));
        }
        if self.storage.pool_size == 0 || self.storage.connect_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "storage: pool_size and connect_timeout_ms must be at least 1".to_owned(),
            ));
        }
        if self.privacy.access_log_retention_days < 0 {
            return Err(ConfigError::Invalid(
                "privacy.access_log_retention_days must not be negative".to_owned(),
            ));
        }
        if self.segments.segments_max == 0 || self.segments.rule_bytes_max == 0 {
            return Err(ConfigError::Invalid(
                "segments: segments_max and rule_bytes_max must be positive".to_owned(),
            ));
        }
        let recommendations = &self.recommendations;
        if recommendations.limit_max == 0 || recommendations.products_per_upload_max == 0 {
            return Err(ConfigError::Invalid(
                "recommendations: limit_max and products_per_upload_max must be positive"
                    .to_owned(),
            ));
        }
        let fuzzy = &self.identity.fuzzy;
        let in_range = |score: f64| (0.0..=1.0).contains(&score);
        if !in_range(fuzzy.auto_merge_probability_min)
            || !in_range(fuzzy.review_probability_min)
            || fuzzy.review_probability_min > fuzzy.auto_merge_probability_min
            || fuzzy.estimate_profiles_min == 0
        {
            return Err(ConfigError::Invalid(
                "identity.fuzzy: probabilities must be in 0..1 with review_probability_min <= auto_merge_probability_min, estimate_profiles_min >= 1"
                    .to_owned(),
            ));
        }
        let merge = &self.identity.merge;
        for pattern in &merge.blocked_patterns {
            regex::Regex::new(&pattern.regex).map_err(|error| {
                ConfigError::Invalid(format!(
                    "identity.merge.blocked_patterns: `{}` is not a valid regular expression: {error}",
                    pattern.regex
                ))
            })?;
        }
        for value in &merge.blocked_values {
            if !value.contains(':') {
                return Err(ConfigError::Invalid(format!(
                    "identity.merge.blocked_values: `{value}` is not kind:value"
                )));
            }
        }
        if merge.identifiers_per_kind_max.values().any(|max| *max == 0)
            || merge.identifiers_per_kind_default == 0
            || merge.hub_profiles_min == 0
        {
            return Err(ConfigError::Invalid(
                "identity.merge limits and hub_profiles_min must be positive".to_owned(),
            ));
        }
        let limits = &self.limits;
        let positive = [
            ("identifiers_per_call_max", limits.identifiers_per_call_max),
            (
                "identifier_value_bytes_max",
                limits.identifier_value_bytes_max,
            ),
            ("events_per_read_max", limits.events_per_read_max),
            ("value_depth_max", limits.value_depth_max),
            (
                "request_message_bytes_max",
                limits.request_message_bytes_max,
            ),
            (
                "response_message_bytes_max",
                limits.response_message_bytes_max,
            ),
            ("calls_in_flight_max", limits.calls_in_flight_max),
            (
                "streams_per_connection_max",
                limits.streams_per_connection_max as usize,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.{name} must be positive"
                )));
            }
        }
        if limits.call_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "limits.call_timeout_ms must be positive".to_owned(),
            ));
        }
        if limits.events_per_read_default > limits.events_per_read_max {
            return Err(ConfigError::Invalid(
                "limits.events_per_read_default exceeds limits.events_per_read_max".to_owned(),
            ));
        }
        if self.storage.write_queue_depth == 0 || self.storage.group_commit_calls_max == 0 {
            return Err(ConfigError::Invalid(
                "storage.write_queue_depth and storage.group_commit_calls_max must be positive"
                    .to_owned(),
            ));
        }
        self.token_set()?;
        Ok(())
    }

    /// The configured tokens, checked: names well-formed and unique,
    /// hashes well-formed, at least one scope each.
    pub fn token_set(&self) -> Result<TokenSet, ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        let mut entries = Vec::with_capacity(self.auth.tokens.len());
        for token in &self.auth.tokens {
            if !valid_token_name(&token.name) {
                return Err(ConfigError::Invalid(format!(
                    "auth.tokens: name `{}` must be 1 to 64 of A-Z a-z 0-9 _ . -",
                    token.name
                )));
            }
            if !names.insert(token.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "auth.tokens: name `{}` is used twice",
                    token.name
                )));
            }
            if token.scopes.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "auth.tokens: `{}` has no scopes",
                    token.name
                )));
            }
            let hash: TokenHash = token.sha256.parse().map_err(|error| {
                ConfigError::Invalid(format!("auth.tokens: `{}`: {error}", token.name))
            })?;
            let caller = Caller {
                token_name: token.name.clone(),
                scopes: token.scopes.clone(),
            };
            entries.push((hash, caller));
        }
        Ok(TokenSet::new(entries))
    }

    /// Whether serving on `address` with this configuration is allowed.
    /// Without tokens every caller may do everything, and without TLS
    /// tokens cross the network in clear text; either is acceptable only
    /// where no one else can connect (loopback), unless the operator says
    /// `--insecure`.
    pub fn exposure(&self, address: SocketAddr) -> Result<Exposure, ConfigError> {
        let has_tokens = !self.auth.tokens.is_empty();
        let has_tls = self.tls.is_some();
        if address.ip().is_loopback() {
            return Ok(if has_tokens {
                Exposure::Protected
            } else {
                Exposure::LoopbackWithoutAuth
            });
        }
        let missing = match (has_tls, has_tokens) {
            (true, true) => return Ok(Exposure::Protected),
            (false, false) => "TLS and authentication tokens",
            (false, true) => "TLS",
            (true, false) => "authentication tokens",
        };
        if self.allow_insecure {
            Ok(Exposure::Insecure)
        } else {
            Err(ConfigError::Exposed { address, missing })
        }
    }
}

/// A parser message with every quoted value replaced by `"…"`: messages
/// such as `invalid type: string "…"` quote what the file holds.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match (c, quoted) {
            ('"', false) => {
                out.push_str("\"…");
                quoted = true;
            }
            ('"', true) => {
                out.push('"');
                quoted = false;
            }
            (_, false) => out.push(c),
            (_, true) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_error_says_where_but_never_echoes_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sightline.toml");
        for text in [
            "listen = \"127.0.0.1:6000\"\ntoken: 3f9c0secret0b7\n",
            "[auth]\ntokens = \"3f9c0secret0b7\"\n",
        ] {
            std::fs::write(&path, text).expect("write");
            let message = Config::from_file(&path).expect_err("invalid").to_string();
            assert!(!message.contains("secret"), "{message}");
            assert!(message.contains("line "), "{message}");
        }
    }

    #[test]
    fn defaults_are_valid_and_files_override_them() {
        Config::default().validate().expect("defaults valid");
        let config: Config =
            toml::from_str("listen = \"127.0.0.1:6000\"\n[identity]\ndefault_region = \"GB\"\n")
                .expect("parses");
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.identity.default_region, "GB");
        assert_eq!(config.limits.identifiers_per_call_max, 20);
        config.validate().expect("valid");
    }

    #[test]
    fn rejects_unknown_fields_and_bad_regions() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
        let mut config = Config::default();
        config.identity.default_region = "XX".to_owned();
        assert!(config.validate().is_err());
        config.identity.default_region = "GB".to_owned();
        config.identity.custom_kinds = vec!["Loyalty Id".to_owned()];
        assert!(config.validate().is_err());
    }

    #[test]
    fn tokens_parse_with_their_scopes_and_bad_ones_are_refused() {
        let hash = crate::security::hash_token("secret").to_string();
        let text = format!(
            "[[auth.tokens]]\nname = \"crm\"\nscopes = [\"events:write\", \"profiles:read\"]\nsha256 = \"{hash}\"\n"
        );
        let config: Config = toml::from_str(&text).expect("parses");
        config.validate().expect("valid");
        let caller = config
            .token_set()
            .unwrap()
            .verify("secret")
            .cloned()
            .unwrap();
        assert_eq!(caller.token_name, "crm");
        assert_eq!(caller.scopes, vec![Scope::EventsWrite, Scope::ProfilesRead]);

        let unknown_scope = text.replace("profiles:read", "profiles:write");
        assert!(toml::from_str::<Config>(&unknown_scope).is_err());
        let mut bad_hash = config.clone();
        bad_hash.auth.tokens[0].sha256 = "secret".to_owned();
        assert!(bad_hash.validate().is_err());
        let mut twice = config.clone();
        twice.auth.tokens.push(config.auth.tokens[0].clone());
        assert!(twice.validate().is_err());
    }

    #[test]
    fn only_loopback_may_go_without_tls_and_tokens() {
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:50051".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let mut config = Config::default();
        assert!(
            config.listen.ip().is_loopback(),
            "serves loopback by default"
        );
        assert_eq!(
            config.exposure(config.listen).unwrap(),
            Exposure::LoopbackWithoutAuth
        );
        assert_eq!(
            config.exposure(loopback).unwrap(),
            Exposure::LoopbackWithoutAuth
        );
        assert_eq!(
            config.exposure(v6_loopback).unwrap(),
            Exposure::LoopbackWithoutAuth
        );
        assert!(matches!(
            config.exposure(open),
            Err(ConfigError::Exposed { .. })
        ));
        config.auth.tokens.push(TokenConfig {
            name: "ops".to_owned(),
            scopes: vec![Scope::Admin],
            sha256: crate::security::hash_token("t").to_string(),
        });
        assert_eq!(config.exposure(loopback).unwrap(), Exposure::Protected);
        // Tokens without TLS would cross the network in clear text.
        assert!(config.exposure(open).is_err());
        config.tls = Some(TlsConfig {
            cert_path: "cert.pem".into(),
            key_path: "key.pem".into(),
            client_ca_path: None,
        });
        assert_eq!(config.exposure(open).unwrap(), Exposure::Protected);
        config.auth.tokens.clear();
        assert!(config.exposure(open).is_err());
        config.allow_insecure = true;
        assert_eq!(config.exposure(open).unwrap(), Exposure::Insecure);
    }
}
