use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use sightline::api::pb::{self, get_profile_request::Lookup};
use sightline::cli::{self, CliError};
use sightline::cli::{OperatorCommand, Target};
use sightline::config::Config;
use sightline::import::{ImportError, ImportOptions};
use sightline::model::SystemClock;
use sightline::quality::{QualityOptions, parse_scenarios, run_quality};
use sightline::security::{Scope, generate_token, valid_token_name};
use tracing_subscriber::EnvFilter;

/// The writer allocates and frees many short-lived buffers of every size
/// (records, index lists, sled's copied nodes); glibc's allocator spent
/// about a third of its time consolidating them. Built without transparent
/// huge pages (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sightline: a unified customer profile store.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server on the embedded database.
    Serve {
        /// TOML configuration file; flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory [default: ./sightline-data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Keep the data in a PostgreSQL-wire database instead of the
        /// embedded one: postgres://user@host:port/database (PostgreSQL,
        /// CockroachDB, YugabyteDB). Overrides `[storage] url`.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Listen address [default: 127.0.0.1:50051].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Log lines as JSON objects instead of text.
        #[arg(long)]
        log_json: bool,
        /// Serve on a non-loopback address even without TLS or without
        /// tokens. Anyone who can reach the address can then read and
        /// change data, or see tokens in transit.
        #[arg(long)]
        insecure: bool,
        /// Serve Prometheus metrics at http://ADDRESS/metrics [default: off].
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Serve the HTTP API (Segment-spec tracking, JSON profile reads)
        /// on ADDRESS [default: off].
        #[arg(long)]
        http_listen: Option<SocketAddr>,
        /// Benchmarks only: store values unsealed, to measure what sealing
        /// costs. Refused on a data directory that already holds data.
        #[arg(long, hide = true)]
        unsealed_for_benchmarks: bool,
    },
    /// Manage bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Import a CSV file of customer records into a running server, one
    /// identify per row. Columns with common names (email, phone,
    /// customer_id, first_name, postcode, ...) map automatically; others
    /// become traits named after their header. Rerunning after an
    /// interruption resumes: rows already imported count as duplicates.
    Import {
        #[command(flatten)]
        target: Target,
        /// The CSV file, with a header row.
        file: PathBuf,
        /// Column mapping as HEADER=identifier:KIND, HEADER=trait:NAME
        /// (trait:address.FIELD for an address field) or HEADER=ignore
        /// (repeatable).
        #[arg(long = "map")]
        overrides: Vec<String>,
        /// Column type as HEADER=number|bool|date|text|auto (repeatable).
        /// Free-form columns are `auto` (numbers and true/false become
        /// such); the reserved traits and address fields are text.
        #[arg(long = "types", value_delimiter = ',')]
        types: Vec<String>,
        /// Field separator, e.g. ';' or 'tab' [default: the one the header
        /// line uses].
        #[arg(long)]
        delimiter: Option<String>,
        /// Column holding when the row's data was true (RFC 3339, a date or
        /// Unix seconds) [default: the time of the import].
        #[arg(long)]
        timestamp_column: Option<String>,
        /// Where rejected rows are written, with their reason
        /// [default: FILE.rejects.csv].
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// Provenance recorded with every row.
        #[arg(long, default_value = "import")]
        source: String,
        /// Rows per Ingest stream; a failed stream is all a rerun repeats.
        #[arg(long, default_value_t = 10_000)]
        stream_rows: usize,
        /// No progress output; only the summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Ask a running server to write a consistent backup into a directory
    /// on its machine while it keeps serving.
    Backup {
        #[command(flatten)]
        target: Target,
        /// Directory for the backup (created if missing; must not hold one).
        dir: PathBuf,
    },
    /// Show the fuzzy-matching model a running server decides with: per
    /// field and comparison level, m, u and the bits log2(m/u).
    MatchModel {
        #[command(flatten)]
        target: Target,
        /// Estimate the model afresh from the stored data first.
        #[arg(long)]
        estimate: bool,
    },
    /// Load a backup into a new data directory, or an empty database
    /// (offline: no server may use it). Start the server on it afterwards.
    Restore {
        /// Directory holding the backup.
        backup_dir: PathBuf,
        /// The data directory to create; refused unless missing or empty.
        #[arg(long, required_unless_present = "store")]
        data: Option<PathBuf>,
        /// Restore into this PostgreSQL-wire database instead; refused
        /// unless it holds no data.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// Re-apply the erasures recorded in this newer copy of the same
        /// installation: the data directory of the stopped server being
        /// replaced, a newer backup directory, or the replaced server's
        /// database URL.
        #[arg(long)]
        privacy_from: Option<String>,
        /// The installation's key store as it is now: the data directory of
        /// the stopped server being replaced (its `keys` file, and its
        /// generated `master.key`), or its database URL. Not needed when
        /// `[privacy] key_store_file` names one that exists.
        #[arg(long)]
        keys_from: Option<String>,
        /// The server's TOML configuration (its `[privacy] suppression_key`
        /// and storage settings).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Re-seal every data key under a new master key (offline: stop the
    /// server first). Stored data and index keys do not change.
    RotateMasterKey {
        /// The file of the new key (64 hex digits); generated (readable by
        /// its owner only) when it does not exist.
        #[arg(long)]
        new_key_file: PathBuf,
        /// The data directory; the configuration's when not given.
        #[arg(long)]
        data: Option<PathBuf>,
        /// The PostgreSQL-wire database, instead of the data directory.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// The server's TOML configuration (where the current master key
        /// is, and the storage settings).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Operator(OperatorCommand),
    /// Send an identify call to a running server.
    Identify {
        #[command(flatten)]
        target: Target,
        /// Identifier as kind:value (repeatable), e.g. email:jane@example.com.
        #[arg(long = "id", required = true)]
        identifiers: Vec<String>,
        /// Trait as name=value (repeatable); the value is JSON or text.
        #[arg(long = "trait")]
        traits: Vec<String>,
        #[command(flatten)]
        call: CallOptions,
    },
    /// Send a track call (one event) to a running server.
    Track {
        #[command(flatten)]
        target: Target,
        /// Identifier as kind:value (repeatable).
        #[arg(long = "id", required = true)]
        identifiers: Vec<String>,
        /// Event name, e.g. "Order Completed".
        #[arg(long)]
        event: String,
        /// Property as name=value (repeatable); the value is JSON or text.
        #[arg(long = "prop")]
        properties: Vec<String>,
        #[command(flatten)]
        call: CallOptions,
    },
    /// Print one profile as JSON, looked up by identifier or profile id.
    Profile {
        #[command(flatten)]
        target: Target,
        /// Identifier as kind:value.
        #[arg(
            long = "id",
            conflicts_with = "profile_id",
            required_unless_present = "profile_id"
        )]
        identifier: Option<String>,
        /// Profile id, e.g. p42 (a merged-away id finds the survivor).
        #[arg(long)]
        profile_id: Option<String>,
        /// Newest events to include (0: server default).
        #[arg(long, default_value_t = 0)]
        events: u32,
    },
    /// Export everything held on a person as one JSON document (GDPR
    /// subject access), written to stdout.
    Export {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        subject: SubjectArgs,
        /// Who asked for it, recorded with the request.
        #[arg(long, default_value = "")]
        requester: String,
    },
    /// Erase a person and everything derived from them (GDPR erasure);
    /// their identifiers are suppressed unless --no-suppression.
    Erase {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        subject: SubjectArgs,
        /// Why, recorded with the request (never the person's data).
        #[arg(long)]
        reason: String,
        /// Who asked for it, recorded with the request.
        #[arg(long, default_value = "")]
        requester: String,
        /// Let later calls carrying the identifiers create a new profile.
        #[arg(long)]
        no_suppression: bool,
    },
    /// Measure identity resolution: load generated dirty data with known
    /// truth into a running (empty) server and report pairwise precision,
    /// recall and F1 per scenario.
    Quality {
        #[command(flatten)]
        target: Target,
        /// People generated per scenario.
        #[arg(long, default_value_t = 1000)]
        people: usize,
        #[arg(long, default_value_t = 20240101)]
        seed: u64,
        /// `all`, or a comma-separated list: clean, typos, nicknames_swaps,
        /// changes, shared_devices, junk.
        #[arg(long, default_value = "all")]
        scenarios: String,
        /// Also list the true pairs left apart, grouped by the evidence
        /// between their profiles.
        #[arg(long)]
        explain_missed: bool,
        /// Also list the profiles holding records of more than one person,
        /// with what each person's records said.
        #[arg(long)]
        explain_merged: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new random token: the token goes to stderr (shown once), the
    /// configuration entry with its SHA-256 to stdout, ready to append to
    /// the server's configuration file.
    Create {
        /// Shown in access logs, e.g. `crm-sync`.
        #[arg(long)]
        name: String,
        /// Comma-separated: profiles:read, events:write, segments:read,
        /// segments:write, privacy:export, privacy:erase, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<Scope>,
    },
}

#[derive(clap::Args)]
struct SubjectArgs {
    /// Identifier as kind:value, e.g. email:jane@example.com.
    #[arg(
        long = "id",
        alias = "identifier",
        conflicts_with = "profile_id",
        required_unless_present = "profile_id"
    )]
    identifier: Option<String>,
    /// Profile id, e.g. p42 (a merged-away id finds the survivor).
    #[arg(long)]
    profile_id: Option<String>,
    /// Your reference for the request; generated when omitted. Repeating
    /// one repeats the answer rather than the work.
    #[arg(long, default_value = "")]
    request_id: String,
}

impl SubjectArgs {
    /// The person as the request's own lookup oneof.
    fn lookup<L>(
        &self,
        by_profile_id: fn(String) -> L,
        by_identifier: fn(pb::Identifier) -> L,
    ) -> Result<L, CliError> {
        match (&self.identifier, &self.profile_id) {
            (Some(identifier), _) => Ok(by_identifier(cli::parse_identifier(identifier)?)),
            (None, Some(profile_id)) => Ok(by_profile_id(profile_id.clone())),
            (None, None) => Err(CliError::Usage("give --id or --profile-id".to_owned())),
        }
    }
}

#[derive(clap::Args)]
struct CallOptions {
    /// Idempotency key: a repeated message id is not applied twice.
    #[arg(long, default_value = "")]
    message_id: String,
    /// When it happened at the source (RFC 3339) [default: now].
    #[arg(long)]
    timestamp: Option<String>,
    /// Provenance: which system the data comes from.
    #[arg(long, default_value = "cli")]
    source: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data,
            store,
            listen,
            log_json,
            insecure,
            metrics_listen,
            http_listen,
            unsealed_for_benchmarks,
        } => {
            init_tracing(log_json);
            let flags = ServeFlags {
                config_path: config,
                data,
                store,
                listen,
                insecure,
                metrics_listen,
                http_listen,
                unsealed_for_benchmarks,
            };
            match serve(flags) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "sightline stopped");
                    eprintln!("sightline: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token {
            command: TokenCommand::Create { name, scopes },
        } => match create_token(&name, &scopes) {
            Ok((token, entry)) => {
                // The secret goes to the terminal, the entry to stdout, so
                // that `>> sightline.toml` appends valid configuration
                // without the secret.
                eprintln!("token: {token}");
                eprintln!("(shown once: hand it to the client; the server keeps only its hash)");
                print!("{entry}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("sightline: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Restore {
            backup_dir,
            data,
            store,
            privacy_from,
            keys_from,
            config,
        } => match restore(
            &backup_dir,
            data.clone(),
            store.clone(),
            [privacy_from, keys_from],
            config,
        ) {
            Ok(report) => {
                let mut summary = serde_json::json!({"keys": report.keys});
                match &data {
                    Some(data) if store.is_none() => {
                        summary["data_dir"] = serde_json::json!(data.display().to_string());
                    }
                    _ => summary["store"] = serde_json::json!("postgres"),
                }
                match report.replayed {
                    Some(replayed) => {
                        summary["erasures_replayed"] = serde_json::json!({
                            "profiles_erased": replayed.profiles_erased,
                            "suppressions_added": replayed.suppressions_added,
                            "requests_added": replayed.requests_added,
                        });
                    }
                    None => eprintln!(
                        "sightline: erasures made after this backup were not re-applied; \
                         pass --privacy-from with the replaced data directory or a newer backup"
                    ),
                }
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("sightline: restore failed: {error}");
                ExitCode::FAILURE
            }
        },
        Command::RotateMasterKey {
            new_key_file,
            data,
            store,
            config,
        } => match rotate_master_key(&new_key_file, data, store, config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("sightline: rotating the master key failed: {error}");
                ExitCode::FAILURE
            }
        },
        client => match run_client(client) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sightline: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_client(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let output = runtime.block_on(async move {
        match command {
            Command::Identify {
                target,
                identifiers,
                traits,
                call,
            } => {
                let request = pb::IdentifyRequest {
                    identifiers: parse_identifiers(&identifiers)?,
                    traits: cli::parse_fields(&traits)?,
                    timestamp: call
                        .timestamp
                        .as_deref()
                        .map(cli::parse_timestamp)
                        .transpose()?,
                    message_id: call.message_id,
                    source: call.source,
                };
                let response = cli::connect(&target.server, &target.bearer()?)
                    .await?
                    .identify(request)
                    .await?;
                Ok::<_, CliError>(cli::write_response_json(&response.into_inner()))
            }
            Command::Track {
                target,
                identifiers,
                event,
                properties,
                call,
            } => {
                let request = pb::TrackRequest {
                    identifiers: parse_identifiers(&identifiers)?,
                    event,
                    properties: cli::parse_fields(&properties)?,
                    timestamp: call
                        .timestamp
                        .as_deref()
                        .map(cli::parse_timestamp)
                        .transpose()?,
                    message_id: call.message_id,
                    source: call.source,
                };
                let response = cli::connect(&target.server, &target.bearer()?)
                    .await?
                    .track(request)
                    .await?;
                Ok(cli::write_response_json(&response.into_inner()))
            }
            Command::Profile {
                target,
                identifier,
                profile_id,
                events,
            } => {
                let lookup = match (identifier, profile_id) {
                    (Some(identifier), _) => {
                        Lookup::Identifier(cli::parse_identifier(&identifier)?)
                    }
                    (None, Some(profile_id)) => Lookup::ProfileId(profile_id),
                    (None, None) => {
                        return Err(CliError::Usage("give --id or --profile-id".to_owned()));
                    }
                };
                let request = pb::GetProfileRequest {
                    lookup: Some(lookup),
                    events_limit: events,
                };
                let response = cli::connect(&target.server, &target.bearer()?)
                    .await?
                    .get_profile(request)
                    .await?;
                let profile = response.into_inner().profile.unwrap_or_default();
                Ok(cli::profile_json(&profile))
            }
            Command::Export {
                target,
                subject,
                requester,
            } => {
                use pb::export_subject_request::Lookup;
                let request = pb::ExportSubjectRequest {
                    lookup: Some(subject.lookup(Lookup::ProfileId, Lookup::Identifier)?),
                    request_id: subject.request_id,
                    requester,
                };
                let mut client = cli::connect_privacy(&target.server, &target.bearer()?).await?;
                cli::export_subject(&mut client, request, &mut std::io::stdout().lock()).await?;
                Ok(serde_json::Value::Null)
            }
            Command::Erase {
                target,
                subject,
                reason,
                requester,
                no_suppression,
            } => {
                use pb::erase_subject_request::Lookup;
                let request = pb::EraseSubjectRequest {
                    lookup: Some(subject.lookup(Lookup::ProfileId, Lookup::Identifier)?),
                    request_id: subject.request_id,
                    requester,
                    reason,
                    skip_suppression: no_suppression,
                };
                let response = cli::connect_privacy(&target.server, &target.bearer()?)
                    .await?
                    .erase_subject(request)
                    .await?;
                Ok(cli::erase_response_json(&response.into_inner()))
            }
            Command::Quality {
                target,
                people,
                seed,
                scenarios,
                explain_missed,
                explain_merged,
            } => {
                let options = QualityOptions {
                    token: target.bearer()?,
                    server: target.server,
                    people_per_scenario: people,
                    seed,
                    scenarios: parse_scenarios(&scenarios)
                        .map_err(|error| CliError::Usage(error.to_string()))?,
                    explain_missed,
                    explain_merged,
                    ..QualityOptions::default()
                };
                let report = run_quality(options)
                    .await
                    .map_err(|error| CliError::Usage(error.to_string()))?;
                cli::print_line(&report.to_string())?;
                Ok(serde_json::Value::Null)
            }
            Command::Import {
                target,
                file,
                overrides,
                types,
                delimiter,
                timestamp_column,
                rejects,
                source,
                stream_rows,
                quiet,
            } => {
                let overrides = overrides
                    .iter()
                    .map(|text| text.parse())
                    .collect::<Result<Vec<_>, ImportError>>()
                    .map_err(|error| CliError::Usage(error.to_string()))?;
                let delimiter = match delimiter.as_deref() {
                    None => None,
                    Some("tab" | "\\t") => Some(b'\t'),
                    Some(text) if text.len() == 1 => text.bytes().next(),
                    Some(text) => {
                        return Err(CliError::Usage(format!(
                            "--delimiter `{text}` is not one character (or `tab`)"
                        )));
                    }
                };
                let types = types
                    .iter()
                    .map(|text| text.parse())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error: ImportError| CliError::Usage(error.to_string()))?;
                let options = ImportOptions {
                    token: target.token.clone(),
                    server: target.server,
                    file,
                    overrides,
                    types,
                    delimiter,
                    timestamp_column,
                    rejects,
                    source,
                    stream_rows,
                    quiet,
                };
                let summary = sightline::import::run(&options)
                    .await
                    .map_err(|error| CliError::Usage(error.to_string()))?;
                Ok(cli::import_summary_json(&summary))
            }
            Command::Backup { target, dir } => {
                let dir = std::path::absolute(&dir)
                    .map_err(|error| CliError::Usage(format!("{}: {error}", dir.display())))?;
                let response = cli::backup(&target.server, target.token.as_deref(), &dir).await?;
                Ok(serde_json::json!({
                    "path": response.path,
                    "keys": response.keys,
                    "bytes": response.bytes,
                    "writer_blocked_ms": response.writer_blocked_ms,
                }))
            }
            Command::MatchModel { target, estimate } => {
                let model =
                    cli::match_model(&target.server, target.token.as_deref(), estimate).await?;
                let fields: Vec<serde_json::Value> = model
                    .fields
                    .iter()
                    .map(|field| {
                        let levels: Vec<serde_json::Value> = field
                            .levels
                            .iter()
                            .map(|level| {
                                serde_json::json!({
                                    "level": level.name,
                                    "m": level.m,
                                    "u": level.u,
                                    "bits": level.bits,
                                })
                            })
                            .collect();
                        serde_json::json!({ "field": field.field, "levels": levels })
                    })
                    .collect();
                Ok(serde_json::json!({
                    "version": model.version,
                    "estimated_at_seconds": model.estimated_at.map(|at| at.seconds),
                    "population": model.population,
                    "duplicate_rate": model.duplicate_rate,
                    "random_pairs": model.random_pairs,
                    "blocked_pairs": model.blocked_pairs,
                    "fields": fields,
                }))
            }
            Command::Operator(command) => cli::run_operator(command).await,
            Command::Serve { .. }
            | Command::Token { .. }
            | Command::Restore { .. }
            | Command::RotateMasterKey { .. } => {
                Err(CliError::Usage("not a client command".to_owned()))
            }
        }
    })?;
    if !output.is_null() {
        cli::print_line(&serde_json::to_string_pretty(&output)?)?;
    }
    Ok(())
}

fn parse_identifiers(texts: &[String]) -> Result<Vec<pb::Identifier>, CliError> {
    texts
        .iter()
        .map(|text| cli::parse_identifier(text))
        .collect()
}

fn init_tracing(json: bool) {
    let filter =
        EnvFilter::try_from_env("SIGHTLINE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only help a person at a terminal; in a file or a pipe
    // they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn create_token(
    name: &str,
    scopes: &[Scope],
) -> Result<(String, String), Box<dyn std::error::Error>> {
    if !valid_token_name(name) {
        return Err("a token name is 1 to 64 of A-Z a-z 0-9 _ . -".into());
    }
    let token = generate_token()?;
    let entry = cli::token_entry(name, scopes, &token);
    Ok((token, entry))
}

/// Panics are logged with their location only: a panic message may quote
/// request data, which must not reach the logs.
fn log_panics_without_messages() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string);
        tracing::error!(location = location.as_deref().unwrap_or("unknown"), "panic");
    }));
}

/// The configuration and store options of an offline command: the file's,
/// with the data directory or database given on the command line.
fn offline_store(
    config_path: Option<PathBuf>,
    data: Option<PathBuf>,
    store: Option<String>,
) -> Result<(Config, sightline::store::SledStoreOptions), Box<dyn std::error::Error>> {
    let mut config = match config_path {
        Some(path) => Config::from_file(&path)?,
        None => Config::default(),
    };
    if let Some(data) = data {
        config.data_dir = data;
    }
    if let Some(url) = store {
        config.storage.url = Some(url);
    }
    config.validate()?;
    let merge_rules =
        sightline::identity::MergeRules::new(&config.identity.merge, &config.identity.fuzzy);
    let options = sightline::server::store_options(&config, merge_rules)?;
    Ok((config, options))
}

fn restore(
    backup_dir: &std::path::Path,
    data: Option<PathBuf>,
    store: Option<String>,
    [privacy_from, keys_from]: [Option<String>; 2],
    config_path: Option<PathBuf>,
) -> Result<sightline::store::RestoreReport, Box<dyn std::error::Error>> {
    let (config, options) = offline_store(config_path, data, store)?;
    let source = |source| sightline::server::privacy_source(&config, source);
    let privacy_from = privacy_from.map(source);
    let keys_from = keys_from.map(source);
    Ok(sightline::store::SledStore::restore(
        backup_dir,
        &options,
        privacy_from.as_ref(),
        keys_from.as_ref(),
    )?)
}

fn rotate_master_key(
    new_key_file: &std::path::Path,
    data: Option<PathBuf>,
    store: Option<String>,
    config_path: Option<PathBuf>,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use sightline::store::sealing::{cipher::SecretKey, master};
    let (_, options) = offline_store(config_path, data, store)?;
    if !new_key_file.exists() {
        master::write(new_key_file, &SecretKey::random())?;
    }
    let new_key = master::MasterKeySource::File(new_key_file.to_owned()).load(true)?;
    let resealed = sightline::store::SledStore::rotate_master_key(&options, &new_key)?;
    let mut summary = serde_json::json!({
        "keys_resealed": resealed,
        "master_key_file": new_key_file.display().to_string(),
    });
    if let Some(generated) = options.sealing.master_key.generated_path() {
        // The store opens with the generated file by default: it now holds
        // the new key.
        let temp = generated.with_extension("new");
        let _ = std::fs::remove_file(&temp);
        master::write(&temp, &new_key)?;
        std::fs::rename(&temp, generated)?;
        summary["master_key_file"] = serde_json::json!(generated.display().to_string());
    } else {
        eprintln!(
            "sightline: the key store is sealed under the new key: point [privacy] \
             master_key_file (or SIGHTLINE_MASTER_KEY) at it before the next start"
        );
    }
    Ok(summary)
}

/// What `serve` was told on the command line.
struct ServeFlags {
    config_path: Option<PathBuf>,
    data: Option<PathBuf>,
    store: Option<String>,
    listen: Option<SocketAddr>,
    insecure: bool,
    metrics_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    unsealed_for_benchmarks: bool,
}

/// Unsealed values written among sealed ones would outlive an erasure, so
/// the benchmark switch only opens a fresh embedded data directory.
fn refuse_unsealed_over_data(config: &Config) -> Result<(), CliError> {
    let holds_data = config.storage.url.is_some()
        || std::fs::read_dir(&config.data_dir).is_ok_and(|mut entries| entries.next().is_some());
    match holds_data {
        true => Err(CliError::Usage(
            "--unsealed-for-benchmarks needs an empty embedded data directory".to_owned(),
        )),
        false => Ok(()),
    }
}

fn serve(flags: ServeFlags) -> Result<(), Box<dyn std::error::Error>> {
    let ServeFlags {
        config_path,
        data,
        store,
        listen,
        insecure,
        metrics_listen,
        http_listen,
        unsealed_for_benchmarks,
    } = flags;
    let mut config = match config_path {
        Some(path) => Config::from_file(&path)?,
        None => Config::default(),
    };
    if let Some(data) = data {
        config.data_dir = data;
    }
    if let Some(url) = store {
        config.storage.url = Some(url);
    }
    if let Some(address) = metrics_listen {
        config.metrics.listen = Some(address);
    }
    if let Some(address) = http_listen {
        config.http.listen = Some(address);
    }
    if let Some(listen) = listen {
        config.listen = listen;
    }
    config.allow_insecure = insecure;
    if unsealed_for_benchmarks {
        refuse_unsealed_over_data(&config)?;
        tracing::warn!("values are stored unsealed: for benchmarks only");
        config.privacy.unsealed_for_benchmarks = true;
    }
    config.validate()?;
    // Refuse before binding: an exposed server must not accept even one
    // connection.
    config.exposure(config.listen)?;
    if let Some(address) = config.http.listen {
        config.exposure(address)?;
    }
    log_panics_without_messages();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let stop = shutdown_signal()?;
        let address = config.listen;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| format!("cannot listen on {address}: {error}"))?;
        sightline::server::run(listener, config, Arc::new(SystemClock), stop).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, before the port opens, so that a signal that comes at once is a
/// graceful stop too, not the default abrupt exit.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
