//! Fuzzy matching: likely duplicates that share no identifier.

use sightline::api::pb::{self, ReviewDecision};
use sightline::config::Config;
use tempfile::TempDir;
use tonic::Code;

use crate::support::*;

fn person(
    email_value: &str,
    first: &str,
    last: &str,
    birthday: &str,
    postal_code: &str,
) -> pb::IdentifyRequest {
    let address = address(&[("postal_code", postal_code), ("country", "GB")]);
    named(vec![email(email_value)], first, last, birthday, address)
}

/// An address trait of these parts.
fn address(parts: &[(&str, &str)]) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
            fields: parts
                .iter()
                .map(|(part, value)| ((*part).to_owned(), text(value)))
                .collect(),
        })),
    }
}

fn named(
    identifiers: Vec<pb::Identifier>,
    first: &str,
    last: &str,
    birthday: &str,
    address: prost_types::Value,
) -> pb::IdentifyRequest {
    let mut request = identify(identifiers);
    request.traits = traits(&[
        ("first_name", text(first)),
        ("last_name", text(last)),
        ("birthday", text(birthday)),
        ("address", address),
    ]);
    request
}

/// Review-only matching: nothing merges automatically.
pub(crate) fn review_only(data_dir: &TempDir) -> Config {
    let mut config = test_config(data_dir);
    config.identity.fuzzy.auto_merge_probability_min = 1.0;
    config
}

pub(crate) async fn candidates(client: &mut Client) -> Vec<pb::MatchCandidate> {
    client
        .list_match_candidates(pb::ListMatchCandidatesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .candidates
}

#[tokio::test]
async fn a_typo_in_the_name_with_the_same_birthday_and_postcode_is_one_person() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let jon = client
        .identify(person(
            "jon@example.com",
            "Jon",
            "Smith",
            "1985-03-02",
            "SW1A 1AA",
        ))
        .await
        .unwrap()
        .into_inner();
    client
        .identify(person(
            "john.smith@example.org",
            "John",
            "Smith",
            "1962-11-30",
            "M1 1AE",
        ))
        .await
        .unwrap();
    let john = client
        .identify(person(
            "jsmyth@example.net",
            "John",
            "Smyth",
            "1985-03-02",
            "SW1A 1AA",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        john.profile_id, jon.profile_id,
        "merged into the older profile"
    );
    assert_eq!(john.outcome(), pb::ResolutionOutcome::Merged);
    let profile = get_by(&mut client, email("jsmyth@example.net"))
        .await
        .unwrap();
    assert_eq!(
        identifier_values(&profile),
        vec!["email:jon@example.com", "email:jsmyth@example.net"],
        "the 1962 John Smith stays apart"
    );
    assert!(
        profile
            .journal
            .iter()
            .any(|e| e.reason.starts_with("fuzzy match"))
    );
}

#[tokio::test]
async fn below_the_auto_merge_threshold_pairs_become_candidates_with_evidence() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = review_only(&data_dir);
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    let jon = client
        .identify(person(
            "jon@example.com",
            "Jon",
            "Smith",
            "1985-03-02",
            "SW1A 1AA",
        ))
        .await
        .unwrap()
        .into_inner();
    let other = client
        .identify(person(
            "john.smith@example.org",
            "John",
            "Smith",
            "1962-11-30",
            "M1 1AE",
        ))
        .await
        .unwrap()
        .into_inner();
    let john = client
        .identify(person(
            "jsmyth@example.net",
            "John",
            "Smyth",
            "1985-03-02",
            "SW1A 1AA",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(john.profile_id, jon.profile_id);

    let pending = candidates(&mut client).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let candidate = &pending[0];
    let mut ids = candidate.profile_ids.clone();
    ids.sort();
    let mut expected = vec![jon.profile_id.clone(), john.profile_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(!candidate.profile_ids.contains(&other.profile_id));
    assert!(candidate.score > 0.5 && candidate.score <= 1.0);
    let fields: Vec<&str> = candidate
        .evidence
        .iter()
        .map(|e| e.field.as_str())
        .collect();
    for field in ["first_name", "last_name", "birthday", "postal_code"] {
        assert!(fields.contains(&field), "{fields:?}");
    }

    let accepted = client
        .review_match_candidate(pb::ReviewMatchCandidateRequest {
            candidate_id: candidate.candidate_id.clone(),
            decision: ReviewDecision::Accept as i32,
            message_id: "review-1".to_owned(),
            reviewer: "data-steward".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.profile_id, jon.profile_id);
    assert_eq!(accepted.merged_profile_ids, vec![john.profile_id.clone()]);
    assert_eq!(
        get_by(&mut client, email("jsmyth@example.net"))
            .await
            .unwrap()
            .profile_id,
        jon.profile_id
    );
    assert!(candidates(&mut client).await.is_empty());
    let again = client
        .review_match_candidate(pb::ReviewMatchCandidateRequest {
            candidate_id: candidate.candidate_id.clone(),
            decision: ReviewDecision::Accept as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

#[tokio::test]
async fn a_rejected_pair_is_not_proposed_again() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = review_only(&data_dir);
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    client
        .identify(person(
            "a1@example.com",
            "Maria",
            "Lopez",
            "1990-07-14",
            "LS1 4AP",
        ))
        .await
        .unwrap();
    client
        .identify(person(
            "a2@example.com",
            "Marie",
            "Lopez",
            "1990-07-14",
            "LS1 4AP",
        ))
        .await
        .unwrap();
    let pending = candidates(&mut client).await;
    assert_eq!(pending.len(), 1);
    let rejected = client
        .review_match_candidate(pb::ReviewMatchCandidateRequest {
            candidate_id: pending[0].candidate_id.clone(),
            decision: ReviewDecision::Reject as i32,
            message_id: String::new(),
            reviewer: "data-steward".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.decision(), ReviewDecision::Reject);
    // Touching the traits again, and a full pass, propose nothing.
    client
        .identify(person(
            "a2@example.com",
            "Marie",
            "Lopez",
            "1990-07-14",
            "LS1 4AP",
        ))
        .await
        .unwrap();
    let pass = client
        .run_matching(pb::RunMatchingRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pass.profiles_checked, 2);
    assert!(candidates(&mut client).await.is_empty());

    let malformed = client
        .review_match_candidate(pb::ReviewMatchCandidateRequest {
            candidate_id: "nonsense".to_owned(),
            decision: ReviewDecision::Accept as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let undecided = client
        .review_match_candidate(pb::ReviewMatchCandidateRequest {
            candidate_id: pending[0].candidate_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(undecided.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_batch_pass_matches_profiles_stored_while_matching_was_off() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.identity.fuzzy.enabled = false;
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    let first = client
        .identify(person(
            "b1@example.com",
            "Aisha",
            "Khan",
            "1979-01-23",
            "B1 1AA",
        ))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .identify(person(
            "b2@example.com",
            "Aisha",
            "Khan",
            "1979-01-23",
            "B1 1AA",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(first.profile_id, second.profile_id);
    drop(client);
    let data_dir = server.stop().await;

    let server = TestServer::start_in(data_dir).await;
    let mut client = server.client().await;
    let pass = client
        .run_matching(pb::RunMatchingRequest {})
        .await
        .unwrap()
        .into_inner();
    // The first profile checked absorbs the second, which is then gone.
    assert_eq!((pass.profiles_checked, pass.merges), (1, 1));
    let profile = get_by(&mut client, email("b2@example.com")).await.unwrap();
    assert_eq!(profile.profile_id, first.profile_id);
}

#[tokio::test]
async fn a_refused_device_link_corroborates_a_name_and_birthday_match() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let phone_device = id("device_id", "own-phone-1");
    let mut first = person(
        "old@example.com",
        "Priya",
        "Sharma",
        "1991-05-17",
        "LS6 2AB",
    );
    first.identifiers.push(phone_device.clone());
    let original = client.identify(first).await.unwrap().into_inner();

    // Months later, a new email on the same phone: refused (a device alone
    // must not make two emails one person)...
    let refused = client
        .identify(identify(vec![email("new@example.com"), phone_device]))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(refused.profile_id, original.profile_id);
    assert_eq!(refused.blocked_links.len(), 1);

    // ...until the same name arrives with a birthday one digit off, from
    // another street of the district: alone, that is only worth a review.
    let moved = client
        .identify(person(
            "new@example.com",
            "Priya",
            "Sharma",
            "1991-05-18",
            "LS6 3CD",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.profile_id, original.profile_id, "{moved:?}");

    // Without the device link, the same traits only make a candidate.
    let stranger = client
        .identify(person(
            "third@example.com",
            "Priya",
            "Sharma",
            "1991-05-19",
            "LS6 4EF",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(stranger.profile_id, original.profile_id);
    assert_eq!(candidates(&mut client).await.len(), 1);
}

/// A sign-up with names and a birthday only.
fn name_and_birthday(
    email_value: &str,
    first: &str,
    last: &str,
    birthday: &str,
) -> pb::IdentifyRequest {
    let mut request = identify(vec![email(email_value)]);
    request.traits = traits(&[
        ("first_name", text(first)),
        ("last_name", text(last)),
        ("birthday", text(birthday)),
    ]);
    request
}

#[tokio::test]
async fn names_and_birthday_merge_when_the_name_is_rare_and_wait_for_review_when_common() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // Thirty Johns and thirty Smiths make `John Smith` a common full name
    // in this store; `Oduya` stays rare.
    for i in 0..30_u8 {
        let letter = char::from(b'a' + i % 26);
        let birthday = format!("{}-05-17", 1940 + u16::from(i));
        let family = format!("Zed{letter}{}", if i < 26 { "" } else { "x" });
        let given = format!("Ann{letter}{}", if i < 26 { "" } else { "x" });
        for (first, last, mailbox) in [
            ("John", family.as_str(), "j"),
            (given.as_str(), "Smith", "s"),
        ] {
            client
                .identify(name_and_birthday(
                    &format!("{mailbox}{i}@example.com"),
                    first,
                    last,
                    &birthday,
                ))
                .await
                .unwrap();
        }
    }

    let robert = client
        .identify(person(
            "robert.oduya@example.com",
            "Robert",
            "Oduya",
            "1992-12-01",
            "EH1 1YZ",
        ))
        .await
        .unwrap()
        .into_inner();
    let bob = client
        .identify(name_and_birthday(
            "bob@work.example.org",
            "Bob",
            "Oduya",
            "1992-12-01",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.profile_id, robert.profile_id, "a rare name merges");

    let john = client
        .identify(person(
            "js@example.com",
            "John",
            "Smith",
            "1985-03-02",
            "SW1A 1AA",
        ))
        .await
        .unwrap()
        .into_inner();
    let namesake = client
        .identify(name_and_birthday(
            "john@work.example.org",
            "John",
            "Smith",
            "1985-03-02",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(namesake.profile_id, john.profile_id, "a common name waits");
    let pending = candidates(&mut client).await;
    assert!(
        pending.iter().any(|candidate| {
            candidate.profile_ids.contains(&john.profile_id)
                && candidate.profile_ids.contains(&namesake.profile_id)
        }),
        "the common name is left for review"
    );
}

#[tokio::test]
async fn an_email_attached_later_is_matched_on() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let robert = client
        .identify(name_and_birthday(
            "robert.oduya@example.com",
            "Robert",
            "Oduya",
            "1987-04-12",
        ))
        .await
        .unwrap()
        .into_inner();
    // The second address arrives without traits, from a sign-in.
    client
        .identify(identify(vec![
            email("robert.oduya@example.com"),
            email("roduya1987@example.org"),
        ]))
        .await
        .unwrap();
    // Keyed in by hand: a mistyped provider, the names, nothing else.
    let mut in_store = identify(vec![email("roduya1987@exmaple.org")]);
    in_store.traits = traits(&[("first_name", text("Robert")), ("last_name", text("Oduya"))]);
    let typed = client.identify(in_store).await.unwrap().into_inner();
    assert_eq!(typed.profile_id, robert.profile_id);
    assert_eq!(typed.outcome(), pb::ResolutionOutcome::Merged);
}

#[tokio::test]
async fn the_batch_pass_counts_a_name_once_however_often_it_runs() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let robert = client
        .identify(person(
            "robert.oduya@example.com",
            "Robert",
            "Oduya",
            "1992-12-01",
            "EH1 1YZ",
        ))
        .await
        .unwrap()
        .into_inner();
    // Each pass re-indexes every profile; counted again each time, the
    // name would soon look common.
    for _ in 0..6 {
        client
            .run_matching(pb::RunMatchingRequest {})
            .await
            .unwrap();
    }
    let bob = client
        .identify(name_and_birthday(
            "bob@work.example.org",
            "Bob",
            "Oduya",
            "1992-12-01",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.profile_id, robert.profile_id, "still a rare name");
}

/// Someone at 134 Station Road, Cardiff, with an email of their own and,
/// optionally, the household's tablet.
fn resident(
    email_value: &str,
    first: &str,
    last: &str,
    birthday: &str,
    tablet: Option<&str>,
) -> pb::IdentifyRequest {
    let address = address(&[
        ("street", "134 Station Road"),
        ("city", "Cardiff"),
        ("postal_code", "CF1 0DZ"),
        ("country", "GB"),
    ]);
    let mut identifiers = vec![email(email_value)];
    identifiers.extend(tablet.map(|device| id("device_id", device)));
    named(identifiers, first, last, birthday, address)
}

#[tokio::test]
async fn flatmates_sharing_a_tablet_stay_apart_and_are_not_listed_for_review() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let tablet = Some("tablet-134-station-road");
    let daniel = client
        .identify(resident(
            "daniel.hawkins@example.com",
            "Daniel",
            "Hawkins",
            "1978-12-23",
            tablet,
        ))
        .await
        .unwrap()
        .into_inner();
    // The shared tablet is refused as a link between two emails; the
    // address, summed over fields that move together, must not stand in
    // for it.
    let archie = client
        .identify(resident(
            "archie.holmes@example.org",
            "Archie",
            "Holmes",
            "1997-02-16",
            tablet,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(archie.profile_id, daniel.profile_id, "{archie:?}");
    assert!(candidates(&mut client).await.is_empty());
}

#[tokio::test]
async fn a_parent_and_a_child_of_one_name_are_never_merged_automatically() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let father = client
        .identify(resident(
            "jordan.williamson@example.com",
            "Jordan",
            "Williamson",
            "1951-07-21",
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    let son = client
        .identify(resident(
            "jwilliamson69@example.org",
            "Jordan",
            "Williamson",
            "1979-06-09",
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(son.profile_id, father.profile_id, "{son:?}");
    // One mistyped digit of the birthday is the father again.
    let again = client
        .identify(resident(
            "jordan.williamson@example.com",
            "Jordan",
            "Williamson",
            "1951-07-27",
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.profile_id, father.profile_id);
}
