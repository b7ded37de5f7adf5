//! The command-line client: `identify`, `track`, `profile`, `export`,
//! `erase` and `backup` against a running server, for operators and for
//! trying Sightline out. Output is JSON on stdout. Calls carry a bearer
//! token when one is given.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::Channel;

use crate::api::convert::{json_value, proto_value};
use crate::api::pb::{
    self, admin_service_client::AdminServiceClient, privacy_service_client::PrivacyServiceClient,
    profile_service_client::ProfileServiceClient,
};
use crate::import::ImportSummary;

mod operations;
mod personalisation;

pub use operations::{OperatorCommand, parse_timestamp, run as run_operator};

/// Writes a line to stdout; a reader that went away early (`| head`) is
/// not an error.
pub fn print_line(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Usage(format!("cannot write the output: {error}")))
        }
        _ => Ok(()),
    }
}

/// Which server a client command talks to, and with which token.
#[derive(clap::Args)]
pub struct Target {
    /// Address of the running server (`host:port`, or a URL).
    #[arg(long, env = "SIGHTLINE_SERVER", default_value = "127.0.0.1:50051")]
    pub server: String,
    /// Bearer token sent with every call.
    #[arg(long, env = "SIGHTLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Target {
    pub fn bearer(&self) -> Result<BearerToken, CliError> {
        BearerToken::new(self.token.as_deref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: tonic::transport::Error,
    },
    #[error("{}: {}", crate::api::code_name(.0.code()), .0.message())]
    Call(#[from] tonic::Status),
    #[error("the token is not a valid header value")]
    Token,
}

/// Adds `authorization: Bearer <token>` to every call, when there is a
/// token. Its `Debug` output hides the token.
#[derive(Clone, Default, PartialEq)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<BearerToken, CliError> {
        let Some(token) = token.map(str::trim).filter(|token| !token.is_empty()) else {
            return Ok(BearerToken(None));
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| CliError::Token)?;
        // Keeps the secret out of HTTP/2 header compression tables.
        value.set_sensitive(true);
        Ok(BearerToken(Some(value)))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() { "Some(..)" } else { "None" };
        write!(f, "BearerToken({shown})")
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A profile-service client whose calls carry the token, if any.
pub type ProfileClient = ProfileServiceClient<InterceptedService<Channel, BearerToken>>;

pub fn profile_client(channel: Channel, token: BearerToken) -> ProfileClient {
    ProfileServiceClient::with_interceptor(channel, token)
}

/// `kind:value`, e.g. `email:jane@example.com`.
pub fn parse_identifier(text: &str) -> Result<pb::Identifier, CliError> {
    let (kind, value) = text
        .split_once(':')
        .ok_or_else(|| CliError::Usage(format!("identifier `{text}` is not kind:value")))?;
    Ok(pb::Identifier {
        kind: kind.to_owned(),
        value: value.to_owned(),
    })
}

/// `name=value`; the value is read as JSON when it parses (`42`, `true`,
/// `{"city":"Leeds"}`), as text otherwise.
pub fn parse_fields(pairs: &[String]) -> Result<Option<prost_types::Struct>, CliError> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut fields = BTreeMap::new();
    for pair in pairs {
        let (name, raw) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("`{pair}` is not name=value")))?;
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        fields.insert(name.to_owned(), proto_value(&value));
    }
    Ok(Some(prost_types::Struct { fields }))
}

pub async fn connect(server: &str, token: &BearerToken) -> Result<ProfileClient, CliError> {
    Ok(profile_client(channel(server).await?, token.clone()))
}

/// A privacy-service client whose calls carry the token, if any.
pub type PrivacyClient = PrivacyServiceClient<InterceptedService<Channel, BearerToken>>;

pub async fn connect_privacy(server: &str, token: &BearerToken) -> Result<PrivacyClient, CliError> {
    Ok(PrivacyServiceClient::with_interceptor(
        channel(server).await?,
        token.clone(),
    ))
}

/// The server's URL: `127.0.0.1:50051` means `http://127.0.0.1:50051`.
pub fn server_url(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

async fn channel(server: &str) -> Result<Channel, CliError> {
    let connect_error = |source| CliError::Connect {
        server: server.to_owned(),
        source,
    };
    tonic::transport::Endpoint::from_shared(server_url(server))
        .map_err(connect_error)?
        .connect()
        .await
        .map_err(connect_error)
}

/// Writes a subject export to `out` as it arrives, chunk by chunk.
pub async fn export_subject(
    client: &mut PrivacyClient,
    request: pb::ExportSubjectRequest,
    out: &mut impl std::io::Write,
) -> Result<(), CliError> {
    let mut stream = client.export_subject(request).await?.into_inner();
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.data)
            .map_err(|error| CliError::Usage(format!("cannot write the export: {error}")))?;
    }
    out.flush()
        .map_err(|error| CliError::Usage(format!("cannot write the export: {error}")))
}

pub fn erase_response_json(response: &pb::EraseSubjectResponse) -> Value {
    let counts = response.counts.unwrap_or_default();
    json!({
        "request_id": response.request_id,
        "erased": response.erased,
        "removed": {
            "profiles": counts.profiles,
            "identifiers": counts.identifiers,
            "traits": counts.traits,
            "events": counts.events,
            "consents": counts.consents,
            "memberships": counts.memberships,
            "match_entries": counts.match_entries,
            "access_log_entries": counts.access_log_entries,
            "message_records": counts.message_records,
        },
        "suppressed_identifiers": counts.suppressed_identifiers,
    })
}

/// What `sightline token create` prints: the token, once, and the entry
/// for the server's configuration, which holds only its hash.
/// The configuration entry that makes a server accept `token`: valid TOML
/// holding only the token's hash, so that it can be appended to the
/// configuration file as it is.
pub fn token_entry(name: &str, scopes: &[crate::security::Scope], token: &str) -> String {
    let hash = crate::security::hash_token(token);
    let scopes: Vec<String> = scopes.iter().map(|scope| format!("\"{scope}\"")).collect();
    format!(
        "# Token `{name}`: append to the server's configuration file.\n\
         [[auth.tokens]]\n\
         name = \"{name}\"\n\
         scopes = [{}]\n\
         sha256 = \"{hash}\"\n",
        scopes.join(", ")
    )
}

/// Asks the server for a backup into `dir` (absolute, on its machine).
pub async fn backup(
    server: &str,
    token: Option<&str>,
    dir: &std::path::Path,
) -> Result<pb::BackupResponse, CliError> {
    let mut client = admin_client(server).await?;
    let request = with_token(
        pb::BackupRequest {
            directory: dir.display().to_string(),
        },
        token,
    )?;
    Ok(client.backup(request).await?.into_inner())
}

/// The match model the server decides with; estimated afresh first when
/// `estimate` is set.
pub async fn match_model(
    server: &str,
    token: Option<&str>,
    estimate: bool,
) -> Result<pb::MatchModel, CliError> {
    let mut client = admin_client(server).await?;
    let model = if estimate {
        let request = with_token(pb::EstimateMatchModelRequest {}, token)?;
        client.estimate_match_model(request).await?
    } else {
        let request = with_token(pb::GetMatchModelRequest {}, token)?;
        client.get_match_model(request).await?
    };
    Ok(model.into_inner())
}

async fn admin_client(server: &str) -> Result<AdminServiceClient<Channel>, CliError> {
    AdminServiceClient::connect(server_url(server))
        .await
        .map_err(|source| CliError::Connect {
            server: server.to_owned(),
            source,
        })
}

fn with_token<T>(message: T, token: Option<&str>) -> Result<tonic::Request<T>, CliError> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| CliError::Usage("the token is not valid header text".to_owned()))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

pub fn import_summary_json(summary: &ImportSummary) -> Value {
    let seconds = summary.elapsed_ms as f64 / 1000.0;
    json!({
        "rows": summary.rows,
        "accepted": summary.accepted,
        "duplicate": summary.duplicate,
        "rejected": summary.rejected,
        "rejected_unlisted": summary.rejected_unlisted,
        "identifiers_dropped": summary.identifiers_dropped,
        "rejects_file": summary.rejects_file.as_ref().map(|path| path.display().to_string()),
        "streams": summary.streams,
        "seconds": seconds,
        "rows_per_second": (summary.rows as f64 / seconds.max(1e-3)).round(),
    })
}

fn identifier_json(identifier: Option<&pb::Identifier>) -> Value {
    identifier.map_or(Value::Null, |identifier| {
        Value::String(format!("{}:{}", identifier.kind, identifier.value))
    })
}

/// Everything the answer holds, refused links and ignored identifiers too.
pub fn write_response_json(response: &pb::WriteResponse) -> Value {
    let blocked: Vec<Value> = response
        .blocked_links
        .iter()
        .map(|link| {
            json!({
                "profile_id": link.profile_id,
                "identifiers": link.identifiers.iter().map(|id| identifier_json(Some(id))).collect::<Vec<_>>(),
                "reason": link.reason,
            })
        })
        .collect();
    let ignored: Vec<Value> = response
        .ignored_identifiers
        .iter()
        .map(|ignored| {
            json!({
                "identifier": identifier_json(ignored.identifier.as_ref()),
                "reason": ignored.reason,
            })
        })
        .collect();
    json!({
        "profile_id": response.profile_id,
        "outcome": response.outcome().as_str_name(),
        "merged_profile_ids": response.merged_profile_ids,
        "duplicate": response.duplicate,
        "suppressed": response.suppressed,
        "blocked_links": blocked,
        "ignored_identifiers": ignored,
    })
}

fn timestamp_json(timestamp: Option<&prost_types::Timestamp>) -> Value {
    timestamp.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn struct_json(object: Option<&prost_types::Struct>) -> Value {
    let fields = object.map(|o| o.fields.iter()).into_iter().flatten();
    Value::Object(
        fields
            .map(|(name, value)| (name.clone(), json_value(value).unwrap_or(Value::Null)))
            .collect(),
    )
}

fn provenance_json(provenance: Option<&pb::Provenance>) -> Value {
    provenance.map_or(Value::Null, |p| {
        json!({
            "message_id": p.message_id,
            "source": p.source,
            "received_at": timestamp_json(p.received_at.as_ref()),
        })
    })
}

pub fn profile_json(profile: &pb::Profile) -> Value {
    let identifiers: Vec<Value> = profile
        .identifiers
        .iter()
        .map(|record| {
            let identifier = record.identifier.clone().unwrap_or_default();
            json!({
                "kind": identifier.kind,
                "value": identifier.value,
                "first_seen": timestamp_json(record.first_seen.as_ref()),
                "last_seen": timestamp_json(record.last_seen.as_ref()),
                "provenance": provenance_json(record.provenance.as_ref()),
            })
        })
        .collect();
    let events: Vec<Value> = profile
        .events
        .iter()
        .map(|event| {
            json!({
                "event_id": event.event_id,
                "name": event.name,
                "timestamp": timestamp_json(event.timestamp.as_ref()),
                "properties": struct_json(event.properties.as_ref()),
                "provenance": provenance_json(event.provenance.as_ref()),
            })
        })
        .collect();
    let computed = profile.computed.clone().unwrap_or_default();
    let consents: Vec<Value> = profile.consents.iter().map(consent_json).collect();
    json!({
        "profile_id": profile.profile_id,
        "merged_profile_ids": profile.merged_profile_ids,
        "computed": {
            "recency_days": computed.recency_days,
            "frequency": computed.frequency,
            "monetary": computed.monetary,
            "average_order_value": computed.average_order_value,
            "r_score": computed.r_score,
            "f_score": computed.f_score,
            "m_score": computed.m_score,
            "email_opens_30d": computed.email_opens_30d,
            "email_clicks_30d": computed.email_clicks_30d,
            "conversions_30d": computed.conversions_30d,
            "engagement_group": computed.engagement_group,
            "lifecycle_stage": computed.lifecycle_stage,
            "last_seen_at": timestamp_json(computed.last_seen_at.as_ref()),
            "interests": computed.interests,
        },
        "consents": consents,
        "identifiers": identifiers,
        "traits": struct_json(profile.traits.as_ref()),
        "event_count": profile.event_count,
        "events": events,
        "created_at": timestamp_json(profile.created_at.as_ref()),
        "updated_at": timestamp_json(profile.updated_at.as_ref()),
        "consent_history": profile.consent_history.iter().map(consent_json).collect::<Vec<_>>(),
        "journal": profile.journal.iter().map(journal_json).collect::<Vec<_>>(),
    })
}

fn consent_json(consent: &pb::Consent) -> Value {
    json!({
        "channel": consent.channel,
        "purpose": consent.purpose,
        "state": consent.state().as_str_name(),
        "at": timestamp_json(consent.at.as_ref()),
        "provenance": provenance_json(consent.provenance.as_ref()),
    })
}

fn journal_json(entry: &pb::JournalEntry) -> Value {
    json!({
        "kind": entry.kind().as_str_name(),
        "at": timestamp_json(entry.at.as_ref()),
        "message_id": entry.message_id,
        "other_profile_ids": entry.other_profile_ids,
        "identifiers": entry.identifiers.iter().map(|id| identifier_json(Some(id))).collect::<Vec<_>>(),
        "reason": entry.reason,
    })
}
