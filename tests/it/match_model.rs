//! Fuzzy matching with a model estimated from the stored data: merges once
//! the model has data, twins left to review, older variants matched on,
//! and a review queue of one fresh candidate per live pair.

use crate::fuzzy::{candidates, review_only};
use crate::support::*;
use sightline::api::pb::{self, admin_service_client::AdminServiceClient};

/// A person as a shop's form holds one; `None` leaves a field out.
#[derive(Clone, Copy)]
struct Person<'a> {
    first: &'a str,
    last: &'a str,
    birthday: &'a str,
    street: Option<&'a str>,
    line2: Option<&'a str>,
    city: &'a str,
    postal_code: &'a str,
}

fn record(anonymous_id: &str, person: Person<'_>) -> pb::IdentifyRequest {
    let mut address = vec![
        ("city".to_owned(), text(person.city)),
        ("postal_code".to_owned(), text(person.postal_code)),
    ];
    if let Some(street) = person.street {
        address.push(("street".to_owned(), text(street)));
    }
    if let Some(line2) = person.line2 {
        address.push(("line2".to_owned(), text(line2)));
    }
    let address = prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
            fields: address.into_iter().collect(),
        })),
    };
    let mut request = identify(vec![id("anonymous_id", anonymous_id)]);
    request.traits = traits(&[
        ("first_name", text(person.first)),
        ("last_name", text(person.last)),
        ("birthday", text(person.birthday)),
        ("address", address),
    ]);
    request
}

/// Letters from a fixed sequence, so the background is the same every run
/// and its people share no names with the tests' own.
struct Letters(u64);

impl Letters {
    fn word(&mut self, length: usize) -> String {
        (0..length)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'a' + ((self.0 >> 33) % 26) as u8)
            })
            .collect()
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// Stores `people` distinct strangers, each twice with a slip in one
/// field, and has the model estimated from them.
async fn background(server: &TestServer, client: &mut Client, people: usize) -> pb::MatchModel {
    let mut letters = Letters(20_261_201);
    for index in 0..people {
        let first = letters.word(6);
        let last = letters.word(8);
        let birthday = format!(
            "19{:02}-{:02}-{:02}",
            30 + letters.below(60),
            1 + letters.below(12),
            1 + letters.below(28)
        );
        let street = format!("{} {} road", 1 + letters.below(150), letters.word(7));
        let city = letters.word(9);
        let postal_code = format!("{}", 2000 + letters.below(7000));
        let person = Person {
            first: &first,
            last: &last,
            birthday: &birthday,
            street: Some(&street),
            line2: None,
            city: &city,
            postal_code: &postal_code,
        };
        client
            .identify(record(&format!("bg-{index}"), person))
            .await
            .unwrap();
        let slipped_last = format!("{}{}", &last[..4], &last[5..]);
        let copy = Person {
            last: &slipped_last,
            ..person
        };
        client
            .identify(record(&format!("bg-{index}-copy"), copy))
            .await
            .unwrap();
    }
    AdminServiceClient::new(server.channel().await)
        .estimate_match_model(pb::EstimateMatchModelRequest {})
        .await
        .unwrap()
        .into_inner()
}

const ALEXANDRA: Person<'static> = Person {
    first: "Alexandra",
    last: "Whitcombe",
    birthday: "1961-04-09",
    street: Some("14 Tarrant Close"),
    line2: None,
    city: "Kilmore",
    postal_code: "3764",
};

#[tokio::test]
async fn a_mistyped_given_name_merges_once_the_model_has_data() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let model = background(&server, &mut client, 150).await;
    assert!(model.version >= 1, "estimated: {model:?}");
    assert!(model.population >= 150);

    let typo = client
        .identify(record(
            "shop-1",
            Person {
                first: "Alexnadra",
                ..ALEXANDRA
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let right = client
        .identify(record("shop-2", ALEXANDRA))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(right.profile_id, typo.profile_id);
    assert_eq!(right.outcome(), pb::ResolutionOutcome::Merged);
}

#[tokio::test]
async fn a_street_written_in_line2_still_agrees() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    background(&server, &mut client, 150).await;
    let in_street = client
        .identify(record("form-1", ALEXANDRA))
        .await
        .unwrap()
        .into_inner();
    let in_line2 = client
        .identify(record(
            "form-2",
            Person {
                street: Some("14"),
                line2: Some("Tarrant Close"),
                ..ALEXANDRA
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_line2.profile_id, in_street.profile_id);
}

/// Twins (same surname, birthday and address, their own first names and
/// emails) among a background population: a pair for review, never an
/// automatic merge. Returns the pending candidate's id.
pub async fn twins_for_review(server: &TestServer, client: &mut Client) -> String {
    background(server, client, 150).await;
    let twin = |anonymous_id: &str, first: &'static str, address: &str| {
        let mut request = record(anonymous_id, Person { first, ..ALEXANDRA });
        request.identifiers.push(email(address));
        request
    };
    let ann = client
        .identify(twin("twin-1", "Ann", "ann.whitcombe@example.com"))
        .await
        .unwrap()
        .into_inner();
    let thomas = client
        .identify(twin("twin-2", "Thomas", "tomw61@example.org"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(thomas.profile_id, ann.profile_id);
    let pass = client
        .run_matching(pb::RunMatchingRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pass.merges, 0);
    let pending = candidates(client).await;
    let twins = pending.iter().find(|candidate| {
        candidate.profile_ids.contains(&ann.profile_id)
            && candidate.profile_ids.contains(&thomas.profile_id)
    });
    twins
        .unwrap_or_else(|| panic!("the twins are a candidate: {pending:?}"))
        .candidate_id
        .clone()
}

#[tokio::test]
async fn twins_are_left_for_review() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    twins_for_review(&server, &mut client).await;
}

#[tokio::test]
async fn a_record_matching_an_older_variant_joins_the_profile() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let old = Person {
        first: "Jon",
        last: "Smith",
        birthday: "1980-05-06",
        street: Some("12 High Street"),
        line2: None,
        city: "Leeds",
        postal_code: "LS2 7EW",
    };
    let mut first = record("web-1", old);
    first.identifiers.push(email("jon.smith@example.com"));
    let original = client.identify(first).await.unwrap().into_inner();
    // The person moves; the same email brings the new address, which
    // replaces the old one in the profile's traits.
    let mut moved = record(
        "web-2",
        Person {
            first: "John",
            street: Some("3 Low Road"),
            city: "Manchester",
            postal_code: "M1 1AE",
            ..old
        },
    );
    moved.identifiers.push(email("jon.smith@example.com"));
    client.identify(moved).await.unwrap();

    let from_the_old_address = client
        .identify(record(
            "store-1",
            Person {
                birthday: "1980-06-05",
                ..old
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_the_old_address.profile_id, original.profile_id);
}

#[tokio::test]
async fn a_candidate_follows_its_profiles_and_each_live_pair_is_listed_once() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = review_only(&data_dir);
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    client.identify(record("a-1", ALEXANDRA)).await.unwrap();
    let with_email = |mut request: pb::IdentifyRequest| {
        request.identifiers.push(email("alex.w@example.com"));
        request
    };
    let b = client
        .identify(with_email(record(
            "b-1",
            Person {
                postal_code: "3765",
                ..ALEXANDRA
            },
        )))
        .await
        .unwrap()
        .into_inner();
    let level = |candidate: &pb::MatchCandidate, field: &str| {
        candidate
            .evidence
            .iter()
            .find(|evidence| evidence.field == field)
            .map(|evidence| evidence.level.clone())
    };
    let listed = candidates(&mut client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        level(&listed[0], "postal_code").as_deref(),
        Some("one_edit")
    );

    // The second profile's postcode is corrected: the candidate is scored
    // again, not left with the evidence it was found with.
    client
        .identify(with_email(record("b-1", ALEXANDRA)))
        .await
        .unwrap();
    let listed = candidates(&mut client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(level(&listed[0], "postal_code").as_deref(), Some("exact"));

    // A third record of the person pairs with both.
    client.identify(record("c-1", ALEXANDRA)).await.unwrap();
    assert_eq!(candidates(&mut client).await.len(), 3);

    // Accepting one pair leaves one candidate between the merged profile
    // and the third, never a pair of one profile with itself or twice.
    let between_a_and_b = candidates(&mut client)
        .await
        .into_iter()
        .find(|candidate| {
            candidate.profile_ids.contains(&b.profile_id)
                && !candidate.profile_ids.iter().any(|id| id == "p3")
        })
        .expect("the a-b candidate");
    client
        .review_match_candidate(pb::ReviewMatchCandidateRequest {
            candidate_id: between_a_and_b.candidate_id,
            decision: pb::ReviewDecision::Accept as i32,
            message_id: "review-1".to_owned(),
            reviewer: "steward".to_owned(),
        })
        .await
        .unwrap();
    let listed = candidates(&mut client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let pair = &listed[0].profile_ids;
    assert_ne!(pair[0], pair[1]);
    assert!(
        !pair.contains(&b.profile_id),
        "names the merged-away profile: {pair:?}"
    );

    let pass = client
        .run_matching(pb::RunMatchingRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pass.candidates, candidates(&mut client).await.len() as u64);
    assert_eq!(pass.candidates, 1);
}

#[tokio::test]
async fn the_model_is_readable_with_its_levels_and_weights() {
    let server = TestServer::start().await;
    let mut admin = AdminServiceClient::new(server.channel().await);
    let model = admin
        .get_match_model(pb::GetMatchModelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(model.version, 0, "the prior before any data");
    let first_name = model
        .fields
        .iter()
        .find(|field| field.field == "first_name")
        .expect("first_name is compared");
    let names: Vec<&str> = first_name
        .levels
        .iter()
        .map(|level| level.name.as_str())
        .collect();
    assert_eq!(names.first(), Some(&"exact"));
    assert_eq!(names.last(), Some(&"else"));
    for level in &first_name.levels {
        assert!((level.bits - (level.m / level.u).log2()).abs() < 1e-9);
    }
}

// The CLI runs as a blocking child process while this runtime serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_the_model_and_estimates_it_on_demand() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    background(&server, &mut client, 60).await;
    let address = format!("http://{}", server.address);
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
            .args(["match-model", "--server", &address])
            .args(extra)
            .output()
            .expect("run sightline match-model");
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON")
    };
    let shown = run(&[]);
    let estimated = run(&["--estimate"]);
    assert!(
        estimated["version"].as_u64() > shown["version"].as_u64(),
        "{shown} then {estimated}"
    );
    let birthday = estimated["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|field| field["field"] == "birthday")
        .expect("birthday is compared");
    assert_eq!(birthday["levels"][0]["level"], "exact");
    assert!(birthday["levels"][0]["bits"].as_f64().unwrap() > 5.0);
}
