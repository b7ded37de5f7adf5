//! `GET /v1/profiles/{kind}:{value}` and `/v1/profiles/{profile_id}`: the
//! data `GetProfile` answers, as JSON, for web back ends.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::HttpApi;
use super::reply::HttpError;
use crate::model::AccessEntry;
use crate::service::{ProfileLookup, RawIdentifier};
use crate::views;

/// Parts of a profile a caller may ask for with `fields`.
const SECTIONS: [&str; 7] = [
    "identifiers",
    "traits",
    "computed",
    "consent",
    "segments",
    "events",
    "journal",
];
/// Asked for when `fields` is absent: all but the merge journal.
const SECTIONS_DEFAULT: [&str; 6] = [
    "identifiers",
    "traits",
    "computed",
    "consent",
    "segments",
    "events",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProfileQuery {
    /// Comma-separated sections; all but `journal` when absent.
    fields: Option<String>,
    /// Newest events returned; the server's default when 0 or absent.
    events_limit: usize,
}

impl HttpApi {
    pub(super) async fn profile(
        &self,
        caller: String,
        lookup: &str,
        query: ProfileQuery,
    ) -> Result<Value, HttpError> {
        let sections = sections(query.fields.as_deref())?;
        let lookup = match lookup.split_once(':') {
            Some((kind, value)) => ProfileLookup::Identifier(RawIdentifier {
                kind: kind.to_owned(),
                value: value.to_owned(),
            }),
            None => ProfileLookup::ProfileId(lookup.to_owned()),
        };
        let wants = |section: &str| sections.contains(&section);
        let events_limit = if wants("events") {
            query.events_limit
        } else {
            1
        };
        let read = self.service.get_profile(lookup, events_limit).await?;
        let profile = &read.profile;
        if let Some(access_log) = &self.access_log {
            access_log
                .record(AccessEntry {
                    profile: profile.profile_id,
                    at: self.service.clock().now(),
                    caller,
                    method: "GET /v1/profiles".to_owned(),
                })
                .await;
        }
        let mut document = Map::new();
        document.insert(
            "profile_id".to_owned(),
            json!(profile.profile_id.to_string()),
        );
        document.insert(
            "merged_profile_ids".to_owned(),
            json!(
                profile
                    .merged_profile_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        );
        document.insert(
            "created_at".to_owned(),
            json!(views::time(profile.created_at)),
        );
        document.insert(
            "updated_at".to_owned(),
            json!(views::time(profile.updated_at)),
        );
        if wants("identifiers") {
            let identifiers: Vec<Value> =
                profile.identifiers.iter().map(views::identifier).collect();
            document.insert("identifiers".to_owned(), json!(identifiers));
        }
        if wants("traits") {
            document.insert(
                "traits".to_owned(),
                Value::Object(views::traits(&profile.traits)),
            );
        }
        if wants("computed") {
            document.insert("computed".to_owned(), views::computed(&read.computed));
        }
        if wants("consent") {
            let consent: Vec<Value> = profile.consents.iter().map(views::consent).collect();
            document.insert("consent".to_owned(), json!(consent));
        }
        if wants("segments") {
            let memberships = match &self.segments {
                Some(segments) => {
                    segments
                        .check(ProfileLookup::ProfileId(profile.profile_id.to_string()))
                        .await?
                        .memberships
                }
                None => Vec::new(),
            };
            document.insert("segments".to_owned(), views::memberships(&memberships));
        }
        if wants("events") {
            document.insert("event_count".to_owned(), json!(profile.event_count));
            let events: Vec<Value> = profile.events.iter().map(views::event).collect();
            document.insert("events".to_owned(), json!(events));
        }
        if wants("journal") {
            let journal: Vec<Value> = profile.journal.iter().map(views::journal_entry).collect();
            document.insert("journal".to_owned(), json!(journal));
        }
        Ok(Value::Object(document))
    }
}

fn sections(fields: Option<&str>) -> Result<Vec<&'static str>, HttpError> {
    let Some(fields) = fields else {
        return Ok(SECTIONS_DEFAULT.to_vec());
    };
    let mut chosen = Vec::new();
    for name in fields
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let section = SECTIONS
            .iter()
            .find(|known| **known == name)
            .ok_or_else(|| {
                HttpError::invalid(
                    "fields",
                    format!("unknown section; expected some of {}", SECTIONS.join(", ")),
                )
            })?;
        chosen.push(*section);
    }
    Ok(chosen)
}
