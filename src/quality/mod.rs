//! The identity-resolution quality harness: generates dirty customer data
//! whose truth is known, loads it into a running server through `Ingest`,
//! asks the server where every record ended up, and scores the profiles
//! against the truth with pairwise precision, recall and F1 (design §2.5),
//! plus a count of super-profiles (design §2.3). It then judges the
//! fuzzy-matching review queue (`ListMatchCandidates`) the same way: how
//! many candidates are left for a human, how many of them are right, and
//! what the profiles would score once a perfect reviewer had decided them
//! (`review.rs` says why).
//!
//! Like [`crate::cli`], this is a gRPC client of a running server, so it
//! uses the generated types directly. Run it against an empty server: data
//! already there can join the harness's records and skew the score.
//!
//! # Wiring a `sightline quality` subcommand
//!
//! In `src/main.rs`, add a client command with the `Target` flags and
//! `--people <n>` (per scenario), `--seed <n>` and
//! `--scenarios <all|clean,typos,...>`; run it on the client runtime like
//! the other client commands:
//!
//! ```no_run
//! # async fn wire(server: String, people: usize, seed: u64, scenarios: &str)
//! # -> Result<(), sightline::quality::QualityError> {
//! use sightline::quality::{QualityOptions, parse_scenarios, run_quality};
//!
//! let options = QualityOptions {
//!     server,
//!     people_per_scenario: people,
//!     seed,
//!     scenarios: parse_scenarios(scenarios)?,
//!     ..QualityOptions::default()
//! };
//! let report = run_quality(options).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

mod evaluate;
mod explain;
mod generate;
mod load;
mod metrics;
pub mod names;
mod report;
mod review;

pub use evaluate::{Placement, junk_stored, place_records};
pub use explain::{MissedClass, MissedPairs, WrongJoins};
pub use generate::{
    Address, Dataset, PEOPLE_PER_SCENARIO_MAX, Person, PersonId, Record, Scenario, generate,
    parse_scenarios,
};
pub use load::{LoadSummary, load};
pub use metrics::{ClusterScore, PairCounts, SuperProfiles, score};
pub use report::{QualityReport, ScenarioReport};
pub use review::{
    CANDIDATES_MAX, CANDIDATES_PER_PAGE, CandidatePair, ReviewScore, list_candidates,
    majority_persons,
};

use crate::cli::{BearerToken, ProfileClient, profile_client};

/// Most items per `Ingest` call: the server's default
/// `limits.ingest_errors_max`, so every rejection of a call is listed.
pub const INGEST_CHUNK_ITEMS_MAX: usize = 1_000;

/// Most `GetProfile` calls in flight at once.
pub const LOOKUPS_IN_FLIGHT_MAX: usize = 64;

/// Largest `GetProfile` answer accepted. A super-profile can hold the
/// identifiers of thousands of people, well past tonic's 4 MiB default,
/// and finding such profiles is the point of the harness.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct QualityOptions {
    /// The server's address, e.g. `http://127.0.0.1:50051`.
    pub server: String,
    /// People generated per scenario, 1..=[`PEOPLE_PER_SCENARIO_MAX`].
    pub people_per_scenario: usize,
    /// The same seed gives the same data (see [`generate`]).
    pub seed: u64,
    /// Scenarios to run, in this order; see [`parse_scenarios`].
    pub scenarios: Vec<Scenario>,
    /// Items per `Ingest` call, 1..=[`INGEST_CHUNK_ITEMS_MAX`]; must not
    /// exceed the server's `limits.ingest_errors_max`.
    pub ingest_chunk_items: usize,
    /// `GetProfile` calls in flight, 1..=[`LOOKUPS_IN_FLIGHT_MAX`].
    pub lookups_in_flight: usize,
    /// A profile with records of more than this many people is a
    /// super-profile.
    pub super_profile_persons_max: usize,
    /// Sent with every call; the harness needs `events:write` and
    /// `profiles:read`.
    pub token: BearerToken,
    /// Classify the true pairs automatic resolution missed by the evidence
    /// between their profiles (see `explain.rs`); costs one `GetProfile`
    /// per split profile.
    pub explain_missed: bool,
    /// List the profiles holding records of more than one person, with
    /// what each person's records said, online and after `RunMatching`.
    pub explain_merged: bool,
}

impl Default for QualityOptions {
    fn default() -> Self {
        QualityOptions {
            server: "http://127.0.0.1:50051".to_owned(),
            people_per_scenario: 200,
            seed: 42,
            scenarios: Scenario::ALL.to_vec(),
            ingest_chunk_items: 500,
            lookups_in_flight: 16,
            super_profile_persons_max: 3,
            token: BearerToken::default(),
            explain_missed: false,
            explain_merged: false,
        }
    }
}

impl QualityOptions {
    fn validate(&self) -> Result<(), QualityError> {
        let in_range = |name: &str, value: usize, max: usize| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(QualityError::Options(format!("{name} must be 1..={max}")))
            }
        };
        in_range(
            "people_per_scenario",
            self.people_per_scenario,
            PEOPLE_PER_SCENARIO_MAX,
        )?;
        in_range(
            "ingest_chunk_items",
            self.ingest_chunk_items,
            INGEST_CHUNK_ITEMS_MAX,
        )?;
        in_range(
            "lookups_in_flight",
            self.lookups_in_flight,
            LOOKUPS_IN_FLIGHT_MAX,
        )?;
        if self.scenarios.is_empty() {
            return Err(QualityError::Options("no scenario selected".to_owned()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("invalid quality options: {0}")]
    Options(String),
    #[error(
        "unknown scenario `{0}`: expected `all` or a comma-separated list of \
         clean, typos, nicknames_swaps, changes, shared_devices, junk"
    )]
    UnknownScenario(String),
    #[error(
        "the server holds {0} profiles: run the harness against a server of its own, \
         started on an empty data directory"
    )]
    NotEmpty(u64),
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: tonic::transport::Error,
    },
    #[error("ingest failed: {}: {}", .0.code(), .0.message())]
    Ingest(tonic::Status),
    #[error("call failed: {}: {}", .0.code(), .0.message())]
    Call(tonic::Status),
    #[error(
        "ingest rejected {rejected} items but listed {listed}: lower ingest_chunk_items \
         to at most the server's limits.ingest_errors_max"
    )]
    RejectionsNotListed { rejected: u64, listed: usize },
    #[error("ingest reported an error for item {index} of a call with {items} items")]
    UnknownItem { index: u64, items: usize },
    #[error("profile lookup failed: {}: {}", .0.code(), .0.message())]
    Lookup(tonic::Status),
    #[error("listing match candidates failed: {}: {}", .0.code(), .0.message())]
    ListCandidates(tonic::Status),
    #[error("match candidate {candidate_id} names {profile_ids} profiles, not 2")]
    MalformedCandidate {
        candidate_id: String,
        profile_ids: usize,
    },
    #[error("the server listed more than {max} match candidates")]
    TooManyCandidates { max: usize },
    #[error("match candidate paging did not advance past page token `{0}`")]
    CandidatePaging(String),
}

/// Runs the selected scenarios one after another against the server at
/// `options.server` and scores each. Scenarios use disjoint identifiers, so
/// one does not disturb another's score.
///
/// Each scenario's review queue is listed right after its records are
/// placed, so the candidates and the placements describe one state of the
/// server: a later scenario's load can still merge profiles and leave the
/// earlier placements naming merged-away ids. The queue is listed whole
/// each time (it holds earlier scenarios' candidates too, which the
/// scenario's review leaves out); that is a few pages per scenario.
pub async fn run_quality(options: QualityOptions) -> Result<QualityReport, QualityError> {
    options.validate()?;
    let connect_error = |source| QualityError::Connect {
        server: options.server.clone(),
        source,
    };
    let channel = tonic::transport::Endpoint::from_shared(crate::cli::server_url(&options.server))
        .map_err(connect_error)?
        .connect()
        .await
        .map_err(connect_error)?;
    let mut client = profile_client(channel, options.token.clone())
        .max_decoding_message_size(RESPONSE_BYTES_MAX);
    // The harness writes made-up people and scores every profile it finds:
    // on a server holding real data it would do harm and measure nothing.
    let held = client
        .count_profiles(crate::api::pb::CountProfilesRequest {})
        .await
        .map_err(QualityError::Call)?
        .into_inner()
        .profiles;
    if held > 0 {
        return Err(QualityError::NotEmpty(held));
    }
    let mut scenarios = Vec::with_capacity(options.scenarios.len());
    let mut loaded = Vec::with_capacity(options.scenarios.len());
    for &scenario in &options.scenarios {
        let (report, dataset, rejected) = run_scenario(&mut client, &options, scenario).await?;
        loaded.push((dataset, rejected));
        tracing::info!(
            scenario = %scenario,
            records = report.records,
            rejected = report.rejected,
            precision = report.precision(),
            recall = report.recall(),
            super_profiles = report.super_profiles.count,
            candidates = report.candidates,
            candidates_true = report.candidates_true,
            review_recall = report.review_recall(),
            "quality scenario scored"
        );
        scenarios.push(report);
    }
    // The model is estimated while the data loads, so records matched early
    // met a model that had not yet seen what later scenarios hold.
    // RunMatching re-estimates it and matches every profile again.
    client
        .run_matching(crate::api::pb::RunMatchingRequest {})
        .await
        .map_err(QualityError::Call)?;
    for (report, (dataset, rejected)) in scenarios.iter_mut().zip(&loaded) {
        let placements = place_records(
            &client,
            &dataset.records,
            rejected,
            options.lookups_in_flight,
        )
        .await?;
        let score = score(
            assignments(dataset, &placements),
            options.super_profile_persons_max,
        );
        report.after_matching = Some(score.pairs);
        if options.explain_merged {
            report.merged_after_matching =
                Some(explain::explain_merged(&dataset.records, &placements));
        }
        report.super_profiles_after_matching = Some(score.super_profiles.count);
    }
    Ok(QualityReport {
        seed: options.seed,
        people_per_scenario: options.people_per_scenario,
        super_profile_persons_max: options.super_profile_persons_max,
        scenarios,
    })
}

/// What a scored record is clustered by.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Cluster<'a> {
    Profile(&'a str),
    /// An unresolved record: alone, keyed by its position.
    Alone(usize),
}

/// Each scored record with the cluster it ended in.
fn assignments<'a>(
    dataset: &Dataset,
    placements: &'a [Placement],
) -> Vec<(generate::PersonId, Cluster<'a>)> {
    dataset
        .records
        .iter()
        .zip(placements)
        .enumerate()
        .filter_map(|(position, (record, placement))| match placement {
            Placement::Excluded => None,
            Placement::Profile(profile_id) => Some((record.person, Cluster::Profile(profile_id))),
            Placement::Unresolved => Some((record.person, Cluster::Alone(position))),
        })
        .collect()
}

/// The scenario's report, its data set and which of its records the
/// server rejected.
async fn run_scenario(
    client: &mut ProfileClient,
    options: &QualityOptions,
    scenario: Scenario,
) -> Result<(ScenarioReport, Dataset, Vec<bool>), QualityError> {
    let dataset = generate(scenario, options.people_per_scenario, options.seed)?;
    let load = load(client, &dataset.records, options.ingest_chunk_items).await?;
    let placements = place_records(
        client,
        &dataset.records,
        &load.rejected_records,
        options.lookups_in_flight,
    )
    .await?;
    let junk_stored = junk_stored(client, &dataset.records, options.lookups_in_flight).await?;
    let unresolved = placements
        .iter()
        .filter(|placement| **placement == Placement::Unresolved)
        .count() as u64;
    let assignments = assignments(&dataset, &placements);
    let score = score(
        assignments.iter().cloned(),
        options.super_profile_persons_max,
    );
    let candidates = list_candidates(client).await?;
    let review = review::review(&assignments, &candidates);
    let missed = if options.explain_missed {
        Some(explain::explain_missed(client, &assignments, options.lookups_in_flight).await?)
    } else {
        None
    };
    let mut report = ScenarioReport::new(&dataset, &load, unresolved, &score, &review, missed);
    report.junk_stored = junk_stored;
    if options.explain_merged {
        report.merged = Some(explain::explain_merged(&dataset.records, &placements));
    }
    let rejected = load.rejected_records.clone();
    Ok((report, dataset, rejected))
}
