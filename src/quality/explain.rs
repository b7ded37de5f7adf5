//! Why automatic resolution missed true pairs: for every person whose
//! records ended in more than one profile, the harness fetches each pair of
//! those profiles, scores them with the fuzzy matcher's prior model at the
//! default thresholds (the server's own model is estimated from its data
//! and may weigh the fields differently), and groups the pairs by the
//! evidence they show.
//! The classes say which rule would recover the most recall, and which
//! pairs carry no usable evidence at all.
//!
//! Only the scenario's own profiles are fetched, one `GetProfile` each, so
//! the cost is a fraction of the placement lookups.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};

use super::generate::{PersonId, Record};
use super::{Cluster, Placement, QualityError};
use crate::api::convert::json_value;
use crate::api::pb::{self, get_profile_request::Lookup};
use crate::cli::ProfileClient;
use crate::identity::fuzzy::{
    MatchDecision, MatchFields, MatchModel, MatchProfile, MatchThresholds, NameFrequencies,
    blocking_keys, decide, score_profiles,
};

/// The population the prior odds are taken at: a mid-sized store.
const EXPLAINED_POPULATION: u64 = 10_000;

/// Pairs of profiles one person's records are split over, grouped by the
/// evidence between the two profiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MissedPairs {
    /// Keyed by a description of the evidence (fields with their bits), the
    /// decision and whether the two profiles share a blocking key.
    pub classes: BTreeMap<String, MissedClass>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MissedClass {
    /// Pairs of profiles in the class.
    pub profile_pairs: u64,
    /// True record pairs they hold: the recall the class costs.
    pub record_pairs: u64,
}

impl fmt::Display for MissedPairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut classes: Vec<_> = self.classes.iter().collect();
        classes.sort_by(|a, b| b.1.record_pairs.cmp(&a.1.record_pairs).then(a.0.cmp(b.0)));
        writeln!(f, "{:>8} {:>8}  evidence", "records", "profiles")?;
        for (class, counts) in classes {
            writeln!(
                f,
                "{:>8} {:>8}  {class}",
                counts.record_pairs, counts.profile_pairs
            )?;
        }
        Ok(())
    }
}

/// Classifies the missed pairs of `assignments` (person and where each
/// scored record ended).
pub(super) async fn explain_missed(
    client: &ProfileClient,
    assignments: &[(PersonId, Cluster<'_>)],
    lookups_in_flight: usize,
) -> Result<MissedPairs, QualityError> {
    let mut records_by_person: HashMap<PersonId, HashMap<&Cluster<'_>, u64>> = HashMap::new();
    for (person, cluster) in assignments {
        *records_by_person
            .entry(*person)
            .or_default()
            .entry(cluster)
            .or_default() += 1;
    }
    let mut split: Vec<(&Cluster<'_>, u64, &Cluster<'_>, u64)> = Vec::new();
    for clusters in records_by_person.values() {
        let clusters: Vec<_> = clusters.iter().collect();
        for (i, (first, first_records)) in clusters.iter().enumerate() {
            for (second, second_records) in &clusters[i + 1..] {
                split.push((first, **first_records, second, **second_records));
            }
        }
    }
    let mut wanted: Vec<String> = split
        .iter()
        .flat_map(|(first, _, second, _)| [*first, *second])
        .filter_map(|cluster| match cluster {
            Cluster::Profile(id) => Some((*id).to_owned()),
            Cluster::Alone(_) => None,
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    let fields: HashMap<String, MatchProfile> = futures::stream::iter(wanted)
        .map(|profile_id| {
            let mut client = client.clone();
            async move {
                let fields = match_fields_of(&mut client, &profile_id).await?;
                Ok::<_, QualityError>((profile_id, fields))
            }
        })
        .buffer_unordered(lookups_in_flight.max(1))
        .try_collect()
        .await?;

    let thresholds = MatchThresholds::default();
    let model = MatchModel::prior();
    let mut missed = MissedPairs::default();
    for (first, first_records, second, second_records) in split {
        let class = match (first, second) {
            (Cluster::Profile(a), Cluster::Profile(b)) => match (fields.get(*a), fields.get(*b)) {
                (Some(a), Some(b)) => describe(&model, a, b, &thresholds),
                _ => "profile gone".to_owned(),
            },
            _ => "unresolved record".to_owned(),
        };
        let counts = missed.classes.entry(class).or_default();
        counts.profile_pairs += 1;
        counts.record_pairs += first_records * second_records;
    }
    Ok(missed)
}

fn describe(
    model: &MatchModel,
    a: &MatchProfile,
    b: &MatchProfile,
    thresholds: &MatchThresholds,
) -> String {
    let keys_b = blocking_keys(b);
    let blocked_together = blocking_keys(a).iter().any(|key| keys_b.contains(key));
    let no_frequencies = |_: &MatchFields, _: &MatchFields| NameFrequencies::default();
    let Some(scored) = score_profiles(model, a, b, &no_frequencies, EXPLAINED_POPULATION) else {
        return "nothing to compare".to_owned();
    };
    let decision = match decide(&scored, thresholds) {
        MatchDecision::AutoMerge => "auto-merge",
        MatchDecision::Review => "review",
        MatchDecision::NoMatch => "no match",
    };
    let evidence: Vec<String> = scored
        .evidence
        .iter()
        .map(|evidence| {
            format!(
                "{}={}{:+.1}",
                evidence.field.name(),
                evidence.level,
                evidence.bits
            )
        })
        .collect();
    let keys = if blocked_together {
        "shared key"
    } else {
        "no shared key"
    };
    format!("{decision}, {keys}: {}", evidence.join(" "))
}

async fn match_fields_of(
    client: &mut ProfileClient,
    profile_id: &str,
) -> Result<MatchProfile, QualityError> {
    let request = pb::GetProfileRequest {
        lookup: Some(Lookup::ProfileId(profile_id.to_owned())),
        events_limit: 1,
    };
    let profile = match client.get_profile(request).await {
        Ok(response) => response.into_inner().profile,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return Err(QualityError::Lookup(status)),
    };
    let Some(profile) = profile else {
        return Ok(MatchProfile::default());
    };
    let traits: Map<String, Value> = profile
        .traits
        .iter()
        .flat_map(|traits| &traits.fields)
        .filter_map(|(name, value)| Some((name.clone(), json_value(value)?)))
        .collect();
    let emails: Vec<String> = profile
        .identifiers
        .iter()
        .filter_map(|record| record.identifier.as_ref())
        .filter(|identifier| identifier.kind == "email")
        .map(|identifier| identifier.value.clone())
        .collect();
    let fields = MatchFields::from_traits(&traits).with_emails(emails.iter().map(String::as_str));
    Ok(MatchProfile::new(fields, []))
}

/// Most wrongly joined profiles listed per scenario.
const MERGED_LISTED_MAX: usize = 40;

/// Profiles holding records of more than one person: what each person's
/// records said, so a wrong join can be traced to the fields behind it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrongJoins {
    /// Profiles with records of two or more people, counted whole.
    pub profiles: u64,
    /// The first [`MERGED_LISTED_MAX`], each a list of people with the
    /// distinct record summaries they contributed.
    pub listed: Vec<Vec<(PersonId, Vec<String>)>>,
}

impl fmt::Display for WrongJoins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} profiles hold records of more than one person",
            self.profiles
        )?;
        for (number, people) in self.listed.iter().enumerate() {
            writeln!(f, "profile {}:", number + 1)?;
            for (person, records) in people {
                for record in records {
                    writeln!(f, "  person {:>6}  {record}", person.0)?;
                }
            }
        }
        Ok(())
    }
}

/// Lists the profiles of `placements` that hold more than one person's
/// records, from the records themselves (no server call).
pub(super) fn explain_merged(records: &[Record], placements: &[Placement]) -> WrongJoins {
    let mut people_by_profile: BTreeMap<&str, BTreeMap<PersonId, Vec<String>>> = BTreeMap::new();
    for (record, placement) in records.iter().zip(placements) {
        let Placement::Profile(profile_id) = placement else {
            continue;
        };
        let summaries = people_by_profile
            .entry(profile_id.as_str())
            .or_default()
            .entry(record.person)
            .or_default();
        if let Some(summary) = summarise(record) {
            if !summaries.contains(&summary) {
                summaries.push(summary);
            }
        }
    }
    let mut joins = WrongJoins::default();
    for people in people_by_profile.into_values() {
        if people.len() < 2 {
            continue;
        }
        joins.profiles += 1;
        if joins.listed.len() < MERGED_LISTED_MAX {
            joins.listed.push(people.into_iter().collect());
        }
    }
    joins
}

/// One line for an identify record: its identifiers and traits.
fn summarise(record: &Record) -> Option<String> {
    let Some(pb::ingest_request::Item::Identify(identify)) = &record.request.item else {
        return None;
    };
    let identifiers: Vec<String> = identify
        .identifiers
        .iter()
        .map(|identifier| format!("{}:{}", identifier.kind, identifier.value))
        .collect();
    let traits: Map<String, Value> = identify
        .traits
        .iter()
        .flat_map(|traits| &traits.fields)
        .filter_map(|(name, value)| Some((name.clone(), json_value(value)?)))
        .collect();
    Some(format!(
        "{} {}",
        identifiers.join(" "),
        Value::Object(traits)
    ))
}
