//! Everything acknowledged survives a restart.

use crate::support::*;

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut request = identify(vec![email("kim@example.com")]);
    request.traits = traits(&[("first_name", text("Kim")), ("score", number(7.5))]);
    let kim = client
        .identify(request)
        .await
        .unwrap()
        .into_inner()
        .profile_id;
    let lee = client
        .identify(identify(vec![phone("+447911123777")]))
        .await
        .unwrap()
        .into_inner()
        .profile_id;
    for i in 0..5 {
        let mut event = track(vec![phone("+447911123777")], "Page Viewed");
        event.message_id = format!("view-{i}");
        client.track(event).await.unwrap();
    }
    client
        .identify(identify(vec![
            email("kim@example.com"),
            phone("+447911123777"),
        ]))
        .await
        .unwrap();
    drop(client);
    let data_dir = server.stop().await;

    let server = TestServer::start_in(data_dir).await;
    let mut client = server.client().await;
    let profile = get_by_id(&mut client, &lee).await.unwrap();
    assert_eq!(profile.profile_id, kim);
    assert_eq!(trait_text(&profile, "first_name").as_deref(), Some("Kim"));
    assert_eq!(profile.event_count, 5);
    assert_eq!(profile.events.len(), 5);
    assert_eq!(
        identifier_values(&profile),
        vec!["email:kim@example.com", "phone:+447911123777"]
    );

    // Message ids are remembered, and new profiles never reuse an id.
    let mut replay = track(vec![phone("+447911123777")], "Page Viewed");
    replay.message_id = "view-0".to_owned();
    assert!(client.track(replay).await.unwrap().into_inner().duplicate);
    let fresh = client
        .identify(identify(vec![user("new")]))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(fresh.profile_id, kim);
    assert_ne!(fresh.profile_id, lee);
}
