//! Deterministic identity resolution: create, attach, merge into the oldest.

use sightline::api::pb::{self, ResolutionOutcome};

use crate::support::*;

#[tokio::test]
async fn linking_an_email_and_a_phone_merges_their_profiles_into_the_oldest() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let first = client
        .identify(identify(vec![email("jane@example.com")]))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .identify(identify(vec![phone("+447911123123")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.outcome(), ResolutionOutcome::Created);
    assert_eq!(second.outcome(), ResolutionOutcome::Created);
    assert_ne!(first.profile_id, second.profile_id);

    let linked = client
        .identify(identify(vec![
            email("jane@example.com"),
            phone("+447911123123"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(linked.outcome(), ResolutionOutcome::Merged);
    assert_eq!(
        linked.profile_id, first.profile_id,
        "the oldest profile survives"
    );
    assert_eq!(linked.merged_profile_ids, vec![second.profile_id.clone()]);

    let lookups = [
        get_by_id(&mut client, &first.profile_id).await.unwrap(),
        get_by_id(&mut client, &second.profile_id).await.unwrap(),
        get_by(&mut client, email("jane@example.com"))
            .await
            .unwrap(),
        get_by(&mut client, phone("+447911123123")).await.unwrap(),
    ];
    for profile in &lookups {
        assert_eq!(profile.profile_id, first.profile_id);
        assert_eq!(profile.merged_profile_ids, vec![second.profile_id.clone()]);
        assert_eq!(
            identifier_values(profile),
            vec!["email:jane@example.com", "phone:+447911123123"]
        );
    }
}

#[tokio::test]
async fn known_identifiers_attach_new_ones_to_their_profile() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let created = client
        .identify(identify(vec![user("crm-1")]))
        .await
        .unwrap()
        .into_inner();
    let attached = client
        .identify(identify(vec![
            user("crm-1"),
            id("device_id", "ABC-1"),
            id("anonymous_id", "cookie-9"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(attached.outcome(), ResolutionOutcome::Attached);
    assert_eq!(attached.profile_id, created.profile_id);
    let profile = get_by(&mut client, id("device_id", "abc-1")).await.unwrap();
    assert_eq!(
        identifier_values(&profile),
        vec!["anonymous_id:cookie-9", "device_id:abc-1", "user_id:crm-1"]
    );
}

#[tokio::test]
async fn merges_union_events_and_keep_the_newest_trait_values() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let mut older = identify(vec![email("a@example.com")]);
    older.traits = traits(&[("first_name", text("Jane")), ("city", text("Leeds"))]);
    older.timestamp = at_seconds(2_000);
    let survivor = client
        .identify(older)
        .await
        .unwrap()
        .into_inner()
        .profile_id;

    let mut newer = identify(vec![phone("+447911123456")]);
    newer.traits = traits(&[("city", text("York")), ("first_name", text("J"))]);
    newer.timestamp = at_seconds(1_000);
    client.identify(newer).await.unwrap();
    let mut later_city = identify(vec![phone("+447911123456")]);
    later_city.traits = traits(&[("city", text("York"))]);
    later_city.timestamp = at_seconds(3_000);
    client.identify(later_city).await.unwrap();

    client
        .track(track(vec![email("a@example.com")], "Page Viewed"))
        .await
        .unwrap();
    client
        .track(track(vec![phone("+447911123456")], "Order Completed"))
        .await
        .unwrap();
    client
        .track(track(vec![phone("+447911123456")], "Email Opened"))
        .await
        .unwrap();

    client
        .identify(identify(vec![
            email("a@example.com"),
            phone("+447911123456"),
        ]))
        .await
        .unwrap();
    let profile = get_by(&mut client, email("a@example.com")).await.unwrap();
    assert_eq!(profile.profile_id, survivor);
    assert_eq!(
        trait_text(&profile, "city").as_deref(),
        Some("York"),
        "set at t=3000"
    );
    assert_eq!(
        trait_text(&profile, "first_name").as_deref(),
        Some("Jane"),
        "set at t=2000"
    );
    assert_eq!(profile.event_count, 3);
    let mut names: Vec<&str> = profile.events.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec!["Email Opened", "Order Completed", "Page Viewed"]
    );
}

#[tokio::test]
async fn traits_are_last_write_wins_by_timestamp_not_arrival() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for (seconds, city) in [
        (100, "Paris"),
        (50, "Lyon"),
        (100, "Nice"),
        (200, "Lille"),
        (150, "Metz"),
    ] {
        let mut request = identify(vec![user("u-1")]);
        request.traits = traits(&[("city", text(city))]);
        request.timestamp = at_seconds(seconds);
        client.identify(request).await.unwrap();
    }
    let profile = get_by(&mut client, user("u-1")).await.unwrap();
    assert_eq!(trait_text(&profile, "city").as_deref(), Some("Lille"));
    let record = profile
        .trait_records
        .iter()
        .find(|t| t.name == "city")
        .unwrap();
    assert_eq!(record.updated_at.as_ref().map(|t| t.seconds), Some(200));

    // A null removes the trait, and an older value cannot bring it back.
    let mut removal = identify(vec![user("u-1")]);
    removal.traits = traits(&[(
        "city",
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NullValue(0)),
        },
    )]);
    removal.timestamp = at_seconds(300);
    client.identify(removal).await.unwrap();
    let mut stale = identify(vec![user("u-1")]);
    stale.traits = traits(&[("city", text("Brest"))]);
    stale.timestamp = at_seconds(250);
    client.identify(stale).await.unwrap();
    let profile = get_by(&mut client, user("u-1")).await.unwrap();
    assert_eq!(trait_text(&profile, "city"), None);
}

#[tokio::test]
async fn concurrent_chain_links_end_in_exactly_one_profile() {
    const LINKS: usize = 200;
    // Concurrency, not merge protection, is under test: allow one person
    // hundreds of user ids.
    let server = TestServer::start_allowing("user_id", 1_000).await;
    let client = server.client().await;
    let calls = (0..LINKS).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .identify(identify(vec![
                    user(&format!("u{i}")),
                    user(&format!("u{}", i + 1)),
                ]))
                .await
                .map(|response| response.into_inner())
        })
    });
    for call in futures::future::join_all(calls).await {
        call.expect("task").expect("identify");
    }

    let mut client = client;
    let expected = get_by(&mut client, user("u0")).await.unwrap();
    assert_eq!(expected.identifiers.len(), LINKS + 1);
    for i in 0..=LINKS {
        let profile = get_by(&mut client, user(&format!("u{i}"))).await.unwrap();
        assert_eq!(profile.profile_id, expected.profile_id, "u{i}");
    }
    for merged in &expected.merged_profile_ids {
        let profile = get_by_id(&mut client, merged).await.unwrap();
        assert_eq!(profile.profile_id, expected.profile_id, "alias {merged}");
    }
    // The survivor is the oldest profile ever created among them.
    let smallest_merged = expected
        .merged_profile_ids
        .iter()
        .map(|id| id[1..].parse::<u64>().unwrap())
        .min()
        .unwrap_or(u64::MAX);
    assert!(expected.profile_id[1..].parse::<u64>().unwrap() < smallest_merged);
}

#[tokio::test]
async fn aliases_of_absorbed_profiles_follow_later_merges() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (x0, x1, x2) = (
        email("x0@example.com"),
        phone("+447911123000"),
        id("anonymous_id", "x2"),
    );
    let mut ids = Vec::new();
    for identifier in [&x0, &x1, &x2] {
        let response = client
            .identify(identify(vec![identifier.clone()]))
            .await
            .unwrap();
        ids.push(response.into_inner().profile_id);
    }
    // x1 + x2 merge first (p2 absorbs p3), then x0 + x1 (p1 absorbs p2).
    client
        .identify(identify(vec![x1.clone(), x2]))
        .await
        .unwrap();
    let last = client
        .identify(identify(vec![x0, x1]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.profile_id, ids[0]);
    for old in &ids {
        let profile = get_by_id(&mut client, old).await.unwrap();
        assert_eq!(profile.profile_id, ids[0]);
    }
    let profile = get_by_id(&mut client, &ids[2]).await.unwrap();
    let mut merged = profile.merged_profile_ids.clone();
    merged.sort();
    assert_eq!(merged, vec![ids[1].clone(), ids[2].clone()]);
}

#[tokio::test]
async fn events_come_back_in_time_order_with_provenance() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for (seconds, name) in [(30, "third"), (10, "first"), (20, "second")] {
        let mut request = track(vec![user("t-1")], name);
        request.timestamp = at_seconds(seconds);
        request.message_id = format!("msg-{name}");
        request.source = "web".to_owned();
        client.track(request).await.unwrap();
    }
    let profile = get_by(&mut client, user("t-1")).await.unwrap();
    let names: Vec<&str> = profile.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["first", "second", "third"]);
    let provenance = profile.events[0].provenance.as_ref().unwrap();
    assert_eq!(
        (provenance.message_id.as_str(), provenance.source.as_str()),
        ("msg-first", "web")
    );
    let identifier = &profile.identifiers[0];
    assert_eq!(
        identifier.provenance.as_ref().unwrap().message_id,
        "msg-third"
    );
    assert_eq!(identifier.first_seen.as_ref().map(|t| t.seconds), Some(10));
    assert_eq!(identifier.last_seen.as_ref().map(|t| t.seconds), Some(30));

    // Only the newest events when a limit is asked for.
    let limited = client
        .get_profile(pb::GetProfileRequest {
            lookup: Some(pb::get_profile_request::Lookup::Identifier(user("t-1"))),
            events_limit: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    let names: Vec<&str> = limited.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["second", "third"]);
    assert_eq!(limited.event_count, 3);
}
