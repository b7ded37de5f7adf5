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

#[tokio::test]
async fn a_record_large_enough_for_a_file_of_its_own_is_synced_before_the_acknowledgement() {
    if postgres_server().is_some() {
        eprintln!("not run on PostgreSQL: blob files are the embedded engine's");
        return;
    }
    let data_dir = tempfile::tempdir().unwrap();
    let blobs = data_dir.path().join("blobs");
    let config = test_config(&data_dir);
    let extras = Extras {
        http: false,
        metrics: true,
    };
    let server = TestServer::start_with_extras(data_dir, config, extras).await;
    let port = server.metrics_port.expect("a metrics listener");
    let mut client = server.client().await;
    // Three calls of 60 KB traits each: a record past a quarter of sled's
    // 512 KiB segment, which sled writes to a file under `blobs/`.
    for part in 0..3 {
        let mut request = identify(vec![email("large@example.com")]);
        let filler: String = (0..60_000)
            .map(|i| char::from(b'a' + ((i * 7 + part * 13) % 26) as u8))
            .collect();
        request.traits = traits(&[(&format!("notes_{part}"), text(&filler))]);
        client.identify(request).await.unwrap();
    }
    let written = std::fs::read_dir(&blobs).map_or(0, |entries| entries.count());
    assert!(written >= 1, "no blob was written; the test proves nothing");
    let metrics = crate::metrics::scrape(port, "/metrics").await;
    let synced = crate::metrics::value(&metrics, "sightline_blob_files_synced_total")
        .expect("the blob counter is exported");
    assert!(
        synced >= 1.0,
        "{synced} blob files synced, {written} on disk"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_a_sigkill() {
    // A graceful stop flushes whatever it holds; SIGKILL leaves only what
    // each acknowledgement made durable.
    let data_dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_binary(data_dir.path());
    let mut client = connect_port(port).await;
    let kim = client
        .identify(identify(vec![email("kim@example.com"), user("k-1")]))
        .await
        .unwrap()
        .into_inner()
        .profile_id;
    for i in 0..25 {
        let mut event = track(vec![user("k-1")], "Page Viewed");
        event.message_id = format!("kill-view-{i}");
        client.track(event).await.unwrap();
    }
    client
        .identify(identify(vec![
            email("kim@example.com"),
            phone("+447911123778"),
        ]))
        .await
        .unwrap();
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let (mut child, port) = spawn_binary(data_dir.path());
    let mut client = connect_port(port).await;
    let profile = get_by(&mut client, phone("+447911123778")).await;
    let _ = child.kill();
    let _ = child.wait();
    let profile = profile.expect("the last acknowledged write is there");
    assert_eq!(profile.profile_id, kim);
    assert_eq!(profile.event_count, 25);
}
