//! A repeated message id is acknowledged and not applied twice.

use sightline::api::pb::ResolutionOutcome;

use crate::support::*;

#[tokio::test]
async fn a_repeated_identify_is_a_duplicate_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut original = identify(vec![email("sam@example.com")]);
    original.message_id = "m-1".to_owned();
    original.traits = traits(&[("plan", text("gold"))]);
    let first = client
        .identify(original.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);

    // Same message id, different content: still the same message.
    let mut replay = original.clone();
    replay.traits = traits(&[("plan", text("bronze"))]);
    replay.identifiers.push(phone("+447911123999"));
    let second = client.identify(replay).await.unwrap().into_inner();
    assert!(second.duplicate);
    assert_eq!(second.outcome(), ResolutionOutcome::Unspecified);
    assert_eq!(second.profile_id, first.profile_id);

    let profile = get_by(&mut client, email("sam@example.com")).await.unwrap();
    assert_eq!(trait_text(&profile, "plan").as_deref(), Some("gold"));
    assert_eq!(identifier_values(&profile), vec!["email:sam@example.com"]);
    let missing = get_by(&mut client, phone("+447911123999"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_repeated_track_adds_one_event() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut event = track(vec![user("u-7")], "Order Completed");
    event.message_id = "order-77".to_owned();
    for _ in 0..3 {
        client.track(event.clone()).await.unwrap();
    }
    let profile = get_by(&mut client, user("u-7")).await.unwrap();
    assert_eq!(profile.event_count, 1);
    assert_eq!(profile.events.len(), 1);
}

#[tokio::test]
async fn a_duplicate_reports_the_survivor_after_a_merge() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let older = client
        .identify(identify(vec![user("a")]))
        .await
        .unwrap()
        .into_inner();
    let mut younger = identify(vec![email("b@example.com")]);
    younger.message_id = "m-b".to_owned();
    client.identify(younger.clone()).await.unwrap();
    client
        .identify(identify(vec![user("a"), email("b@example.com")]))
        .await
        .unwrap();
    let replay = client.identify(younger).await.unwrap().into_inner();
    assert!(replay.duplicate);
    assert_eq!(replay.profile_id, older.profile_id);
}
