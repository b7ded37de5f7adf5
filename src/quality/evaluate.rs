//! Finds the profile each record ended in, by asking the server for the
//! profile of one of the record's identifiers once everything is loaded.
//!
//! Lookups send identifiers exactly as the record did: the server
//! normalizes them, and normalizing here would hide normalization bugs.
//! Every write resolves its identifiers onto one profile and later merges
//! carry them along, so any identifier of a record finds where the record
//! is now; the record's best identifier is asked first because merge
//! protection may leave a junk or conflicting identifier on another profile.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use super::QualityError;
use super::generate::Record;
use crate::api::pb::{self, get_profile_request::Lookup};
use crate::cli::ProfileClient;

/// Where a record is after the load.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Not scored: the server rejected it, or it is a resend of the record
    /// before it (which would count the same evidence twice).
    Excluded,
    /// In this (live) profile.
    Profile(String),
    /// Accepted, yet none of its identifiers finds a profile. Scored as a
    /// profile of its own, so losing records costs recall.
    Unresolved,
}

/// `(kind, value)` exactly as sent.
type Key = (String, String);

fn key(identifier: &pb::Identifier) -> Key {
    (identifier.kind.clone(), identifier.value.clone())
}

/// Places every record not rejected (per `rejected`, in the same order as
/// `records`). Each distinct identifier is looked up once, at most
/// `lookups_in_flight` at a time. A record whose identifier finds nothing
/// tries its next one, in rounds, so the lookups of a round can run
/// concurrently.
pub async fn place_records(
    client: &ProfileClient,
    records: &[Record],
    rejected: &[bool],
    lookups_in_flight: usize,
) -> Result<Vec<Placement>, QualityError> {
    let mut placements = vec![Placement::Excluded; records.len()];
    let mut answers: HashMap<Key, Option<String>> = HashMap::new();
    let mut next_lookup = vec![0_usize; records.len()];
    let mut pending: Vec<usize> = (0..records.len())
        .filter(|&i| !rejected.get(i).copied().unwrap_or(false) && !records[i].resend)
        .collect();
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut wanted = Vec::new();
        let mut asked = HashSet::new();
        for i in pending {
            loop {
                let Some(identifier) = records[i].lookup.get(next_lookup[i]) else {
                    placements[i] = Placement::Unresolved;
                    break;
                };
                match answers.get(&key(identifier)) {
                    Some(Some(profile_id)) => {
                        placements[i] = Placement::Profile(profile_id.clone());
                        break;
                    }
                    Some(None) => next_lookup[i] += 1,
                    None => {
                        if asked.insert(key(identifier)) {
                            wanted.push(identifier.clone());
                        }
                        waiting.push(i);
                        break;
                    }
                }
            }
        }
        // Every waiting record's current identifier is answered now, so the
        // next round moves each of them on: the loop ends.
        answers.extend(look_up_all(client, wanted, lookups_in_flight).await?);
        pending = waiting;
    }
    Ok(placements)
}

async fn look_up_all(
    client: &ProfileClient,
    identifiers: Vec<pb::Identifier>,
    lookups_in_flight: usize,
) -> Result<Vec<(Key, Option<String>)>, QualityError> {
    futures::stream::iter(identifiers)
        .map(|identifier| {
            // Clients share one connection; a clone is a cheap handle.
            let mut client = client.clone();
            async move {
                let key = key(&identifier);
                let profile_id = profile_of(&mut client, identifier).await?;
                Ok::<_, QualityError>((key, profile_id))
            }
        })
        .buffer_unordered(lookups_in_flight.max(1))
        .try_collect()
        .await
}

/// How many of the records' distinct junk identifiers a profile holds:
/// junk is never stored, so anything but zero is a value the blocklist
/// let through.
pub async fn junk_stored(
    client: &ProfileClient,
    records: &[Record],
    lookups_in_flight: usize,
) -> Result<u64, QualityError> {
    let distinct: HashSet<Key> = records
        .iter()
        .flat_map(|record| record.junk.iter().map(key))
        .collect();
    let found: Vec<Option<String>> = futures::stream::iter(distinct)
        .map(|(kind, value)| {
            let mut client = client.clone();
            async move { profile_of(&mut client, pb::Identifier { kind, value }).await }
        })
        .buffer_unordered(lookups_in_flight.max(1))
        .try_collect()
        .await?;
    Ok(found.iter().filter(|profile| profile.is_some()).count() as u64)
}

/// The live profile holding `identifier`, or `None` when there is none.
async fn profile_of(
    client: &mut ProfileClient,
    identifier: pb::Identifier,
) -> Result<Option<String>, QualityError> {
    let request = pb::GetProfileRequest {
        lookup: Some(Lookup::Identifier(identifier)),
        // Events are not needed; 0 would mean the server's default of 20.
        events_limit: 1,
    };
    match client.get_profile(request).await {
        Ok(response) => Ok(response
            .into_inner()
            .profile
            .map(|profile| profile.profile_id)),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(QualityError::Lookup(status)),
    }
}
