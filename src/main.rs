use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use sightline::api::pb::{self, get_profile_request::Lookup};
use sightline::cli::{self, CliError};
use sightline::config::Config;
use sightline::import::{ImportError, ImportOptions};
use sightline::model::SystemClock;
use sightline::quality::{QualityOptions, parse_scenarios, run_quality};
use tracing_subscriber::EnvFilter;

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
        /// Listen address [default: 127.0.0.1:50051].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Log lines as JSON objects instead of text.
        #[arg(long)]
        log_json: bool,
        /// Serve Prometheus metrics at http://ADDRESS/metrics [default: off].
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Import a CSV file of customer records into a running server, one
    /// identify per row. Columns with common names (email, phone,
    /// customer_id, first_name, postcode, ...) map automatically; others
    /// become traits named after their header. Rerunning after an
    /// interruption resumes: rows already imported count as duplicates.
    Import {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        token: Token,
        /// The CSV file, with a header row.
        file: PathBuf,
        /// Column mapping as HEADER=identifier:KIND, HEADER=trait:NAME
        /// (trait:address.FIELD for an address field) or HEADER=ignore
        /// (repeatable).
        #[arg(long = "map")]
        overrides: Vec<String>,
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
        #[command(flatten)]
        token: Token,
        /// Directory for the backup (created if missing; must not hold one).
        dir: PathBuf,
    },
    /// Load a backup into a new data directory (offline: no server may use
    /// it). Start the server on that directory afterwards.
    Restore {
        /// Directory holding the backup.
        backup_dir: PathBuf,
        /// The data directory to create; refused unless missing or empty.
        #[arg(long)]
        data: PathBuf,
    },
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
        #[arg(long)]
        profile_id: Option<String>,
        /// Newest events to include (0: server default).
        #[arg(long, default_value_t = 0)]
        events: u32,
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
    },
}

#[derive(clap::Args)]
struct Target {
    /// Address of the running server.
    #[arg(
        long,
        env = "SIGHTLINE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
}

#[derive(clap::Args)]
struct Token {
    /// Sent as `authorization: Bearer TOKEN`.
    #[arg(long, env = "SIGHTLINE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct CallOptions {
    /// Idempotency key: a repeated message id is not applied twice.
    #[arg(long, default_value = "")]
    message_id: String,
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
            listen,
            log_json,
            metrics_listen,
        } => {
            init_tracing(log_json);
            match serve(config, data, listen, metrics_listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "sightline stopped");
                    eprintln!("sightline: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Restore { backup_dir, data } => {
            match sightline::store::SledStore::restore(&backup_dir, &data) {
                Ok(report) => {
                    println!(
                        "{}",
                        serde_json::json!({"keys": report.keys, "data_dir": data.display().to_string()})
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("sightline: restore failed: {error}");
                    ExitCode::FAILURE
                }
            }
        }
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
                    message_id: call.message_id,
                    timestamp: None,
                    source: call.source,
                };
                let response = cli::connect(&target.server)
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
                    message_id: call.message_id,
                    timestamp: None,
                    source: call.source,
                };
                let response = cli::connect(&target.server).await?.track(request).await?;
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
                let response = cli::connect(&target.server)
                    .await?
                    .get_profile(request)
                    .await?;
                let profile = response.into_inner().profile.unwrap_or_default();
                Ok(cli::profile_json(&profile))
            }
            Command::Quality {
                target,
                people,
                seed,
                scenarios,
            } => {
                let options = QualityOptions {
                    server: target.server,
                    people_per_scenario: people,
                    seed,
                    scenarios: parse_scenarios(&scenarios)
                        .map_err(|error| CliError::Usage(error.to_string()))?,
                    ..QualityOptions::default()
                };
                let report = run_quality(options)
                    .await
                    .map_err(|error| CliError::Usage(error.to_string()))?;
                println!("{report}");
                Ok(serde_json::Value::Null)
            }
            Command::Import {
                target,
                token,
                file,
                overrides,
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
                let options = ImportOptions {
                    server: target.server,
                    token: token.token,
                    file,
                    overrides,
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
            Command::Backup { target, token, dir } => {
                let dir = std::path::absolute(&dir)
                    .map_err(|error| CliError::Usage(format!("{}: {error}", dir.display())))?;
                let response = cli::backup(&target.server, token.token.as_deref(), &dir).await?;
                Ok(serde_json::json!({
                    "path": response.path,
                    "keys": response.keys,
                    "bytes": response.bytes,
                    "writer_blocked_ms": response.writer_blocked_ms,
                }))
            }
            Command::Serve { .. } | Command::Restore { .. } => {
                Err(CliError::Usage("not a client command".to_owned()))
            }
        }
    })?;
    if !output.is_null() {
        println!("{}", serde_json::to_string_pretty(&output)?);
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(
    config_path: Option<PathBuf>,
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match config_path {
        Some(path) => Config::from_file(&path)?,
        None => Config::default(),
    };
    if let Some(data) = data {
        config.data_dir = data;
    }
    if let Some(address) = metrics_listen {
        config.metrics.listen = Some(address);
    }
    if let Some(listen) = listen {
        config.listen = listen;
    }
    config.validate()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        sightline::server::run(listener, config, Arc::new(SystemClock), shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
