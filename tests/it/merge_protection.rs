//! Merge protection, the merge journal and unmerge.

use sightline::api::pb::{self, ingest_request::Item, journal_entry::Kind};
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn people_sharing_a_family_tablet_stay_apart() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let tablet = id("device_id", "family-tablet-1");
    for person in 0..50 {
        let mut event = track(
            vec![
                tablet.clone(),
                email(&format!("person{person}@example.com")),
            ],
            "Page Viewed",
        );
        event.message_id = format!("tablet-{person}");
        client.track(event).await.unwrap();
    }
    let mut profiles = std::collections::BTreeSet::new();
    for person in 0..50 {
        let profile = get_by(&mut client, email(&format!("person{person}@example.com")))
            .await
            .unwrap();
        let emails = profile
            .identifiers
            .iter()
            .filter(|record| {
                record
                    .identifier
                    .as_ref()
                    .is_some_and(|i| i.kind == "email")
            })
            .count();
        assert_eq!(emails, 1, "person {person} shares a profile");
        assert_eq!(
            profile.event_count, 1,
            "person {person} got someone else's events"
        );
        profiles.insert(profile.profile_id);
    }
    assert_eq!(profiles.len(), 50);
    // After a few refused links the tablet is a hub and is ignored.
    let response = client
        .identify(identify(vec![tablet, email("late@example.com")]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        response
            .ignored_identifiers
            .iter()
            .any(|ignored| ignored.reason == "hub"),
        "{response:?}"
    );
}

#[tokio::test]
async fn a_junk_email_shared_by_a_thousand_user_ids_merges_nobody() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let items: Vec<pb::IngestRequest> = (0..1000)
        .map(|i| pb::IngestRequest {
            item: Some(Item::Identify(identify(vec![
                user(&format!("crm-{i}")),
                email("test@example.com"),
            ]))),
        })
        .collect();
    let summary = client
        .ingest(futures::stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.accepted, 1000, "{:?}", summary.errors.first());
    let mut profiles = std::collections::BTreeSet::new();
    for i in 0..1000 {
        let profile = get_by(&mut client, user(&format!("crm-{i}")))
            .await
            .unwrap();
        assert_eq!(
            identifier_values(&profile),
            vec![format!("user_id:crm-{i}")]
        );
        profiles.insert(profile.profile_id);
    }
    assert_eq!(profiles.len(), 1000);
    let status = get_by(&mut client, email("test@example.com"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "junk is never stored");

    let response = client
        .identify(identify(vec![user("crm-1"), email("TEST@example.com")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.ignored_identifiers.len(), 1);
    assert_eq!(response.ignored_identifiers[0].reason, "junk");
    let only_junk = client
        .identify(identify(vec![email("test@example.com")]))
        .await
        .unwrap_err();
    assert_eq!(only_junk.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn two_user_ids_are_never_merged_and_the_refusal_is_journaled() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let first = client
        .identify(identify(vec![user("u-1"), email("a@example.com")]))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .identify(identify(vec![user("u-2")]))
        .await
        .unwrap()
        .into_inner();
    let mut linking = identify(vec![email("a@example.com"), user("u-2")]);
    linking.message_id = "link-1".to_owned();
    let response = client.identify(linking).await.unwrap().into_inner();
    // The call goes to the holder of its strongest identifier (the user id).
    assert_eq!(response.profile_id, second.profile_id);
    assert!(response.merged_profile_ids.is_empty());
    // Not "attached": the link it asked for was refused.
    assert_eq!(
        response.outcome(),
        pb::ResolutionOutcome::Blocked,
        "{response:?}"
    );
    assert_eq!(response.blocked_links.len(), 1);
    assert_eq!(response.blocked_links[0].profile_id, first.profile_id);
    assert!(
        response.blocked_links[0].reason.contains("user_id"),
        "{}",
        response.blocked_links[0].reason
    );

    for profile_id in [&first.profile_id, &second.profile_id] {
        let profile = get_by_id(&mut client, profile_id).await.unwrap();
        let blocked: Vec<&pb::JournalEntry> = profile
            .journal
            .iter()
            .filter(|e| e.kind() == Kind::BlockedMerge)
            .collect();
        assert_eq!(blocked.len(), 1, "{profile_id}: {:?}", profile.journal);
        assert_eq!(blocked[0].message_id, "link-1");
    }
}

fn event_ids(profile: &pb::Profile) -> Vec<String> {
    profile
        .events
        .iter()
        .map(|event| event.event_id.clone())
        .collect()
}

#[tokio::test]
async fn unmerge_restores_both_people_and_the_link_is_not_made_again() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (ann, bob) = (email("ann@example.com"), phone("+447911123111"));

    let mut ann_identify = identify(vec![ann.clone()]);
    ann_identify.traits = traits(&[("first_name", text("Ann")), ("city", text("Leeds"))]);
    ann_identify.timestamp = at_seconds(1_000);
    client.identify(ann_identify).await.unwrap();
    let mut bob_identify = identify(vec![bob.clone()]);
    bob_identify.traits = traits(&[("first_name", text("Bob")), ("plan", text("gold"))]);
    bob_identify.timestamp = at_seconds(2_000);
    client.identify(bob_identify).await.unwrap();
    for (who, name, seconds) in [
        (&ann, "Page Viewed", 10),
        (&bob, "Order Completed", 20),
        (&ann, "Email Opened", 30),
        (&bob, "Email Clicked", 40),
    ] {
        let mut event = track(vec![who.clone()], name);
        event.timestamp = at_seconds(seconds);
        client.track(event).await.unwrap();
    }
    let ann_before = get_by(&mut client, ann.clone()).await.unwrap();
    let bob_before = get_by(&mut client, bob.clone()).await.unwrap();

    // The wrong link, then the operator's repair.
    let mut wrong = identify(vec![ann.clone(), bob.clone()]);
    wrong.message_id = "wrong-link".to_owned();
    let merged = client.identify(wrong.clone()).await.unwrap().into_inner();
    assert_eq!(
        merged.merged_profile_ids,
        vec![bob_before.profile_id.clone()]
    );
    let merged_profile = get_by(&mut client, ann.clone()).await.unwrap();
    assert_eq!(merged_profile.event_count, 4);
    assert_eq!(
        trait_text(&merged_profile, "first_name").as_deref(),
        Some("Bob")
    );

    let split = client
        .unmerge(pb::UnmergeRequest {
            lookup: Some(pb::unmerge_request::Lookup::Identifier(ann.clone())),
            identifiers: vec![bob.clone()],
            message_id: "repair-1".to_owned(),
            reason: "household members merged by mistake".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(split.profile_id, ann_before.profile_id);
    assert_eq!(split.moved_events, 2);

    let ann_after = get_by(&mut client, ann.clone()).await.unwrap();
    let bob_after = get_by(&mut client, bob.clone()).await.unwrap();
    assert_eq!(bob_after.profile_id, split.new_profile_id);
    for (before, after) in [(&ann_before, &ann_after), (&bob_before, &bob_after)] {
        assert_eq!(identifier_values(after), identifier_values(before));
        assert_eq!(after.traits, before.traits);
        assert_eq!(event_ids(after), event_ids(before));
        assert_eq!(after.event_count, before.event_count);
    }
    for profile in [&ann_after, &bob_after] {
        assert!(
            profile
                .journal
                .iter()
                .any(|e| e.kind() == Kind::Unmerge && e.message_id == "repair-1")
        );
    }

    // Replaying the wrong link does not merge them again.
    wrong.message_id = "wrong-link-again".to_owned();
    let replay = client.identify(wrong).await.unwrap().into_inner();
    assert!(replay.merged_profile_ids.is_empty());
    assert_eq!(replay.blocked_links.len(), 1);
    assert_ne!(
        get_by(&mut client, ann).await.unwrap().profile_id,
        get_by(&mut client, bob).await.unwrap().profile_id
    );
}

#[tokio::test]
async fn unmerge_rejects_bad_requests_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let created = client
        .identify(identify(vec![
            email("c@example.com"),
            phone("+447911123222"),
        ]))
        .await
        .unwrap()
        .into_inner();
    let request = |identifiers: Vec<pb::Identifier>| pb::UnmergeRequest {
        lookup: Some(pb::unmerge_request::Lookup::ProfileId(
            created.profile_id.clone(),
        )),
        identifiers,
        message_id: String::new(),
        reason: String::new(),
    };
    let not_on_profile = client
        .unmerge(request(vec![email("other@example.com")]))
        .await
        .unwrap_err();
    assert_eq!(
        not_on_profile.code(),
        Code::InvalidArgument,
        "{not_on_profile:?}"
    );
    assert!(
        not_on_profile.message().starts_with("identifiers[0]"),
        "{}",
        not_on_profile.message()
    );
    let everything = client
        .unmerge(request(vec![
            email("c@example.com"),
            phone("+447911123222"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(everything.code(), Code::InvalidArgument);
    let nothing = client.unmerge(request(vec![])).await.unwrap_err();
    assert_eq!(nothing.code(), Code::InvalidArgument);
    let unknown = client
        .unmerge(pb::UnmergeRequest {
            lookup: Some(pb::unmerge_request::Lookup::ProfileId("p999".to_owned())),
            ..request(vec![email("c@example.com")])
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let profile = get_by_id(&mut client, &created.profile_id).await.unwrap();
    assert_eq!(profile.identifiers.len(), 2);
    assert!(profile.journal.is_empty());
}
