//! What operators and generic gRPC clients rely on: health, reflection, and
//! the binary's graceful shutdown on SIGTERM.

use std::process::Command;
use std::time::Duration;

use sightline::api::pb;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::support::*;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_its_services() {
    let server = TestServer::start().await;
    let _ = server.client().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "sightline.v1.ProfileService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_the_services() {
    let server = TestServer::start().await;
    let _ = server.client().await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"sightline.v1.ProfileService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_binary_shuts_down_gracefully_on_sigterm_keeping_acknowledged_writes() {
    let data_dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_binary(data_dir.path());
    let mut client = connect_port(port).await;
    for i in 0..20 {
        let mut event = track(vec![user("sig")], "Page Viewed");
        event.message_id = format!("sig-{i}");
        client.track(event).await.unwrap();
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    let (mut child, port) = spawn_binary(data_dir.path());
    let mut client = connect_port(port).await;
    let profile = get_by(&mut client, user("sig")).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(profile.unwrap().event_count, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_as_soon_as_the_port_opens_is_a_graceful_stop() {
    let data_dir = tempfile::tempdir().unwrap();
    // A port fixed in advance: the test must find it open before the
    // server says anything.
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data_dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the binary");
    let pid = child.id().to_string();
    // The first moment anything answers on the port.
    let opened = tokio::task::spawn_blocking(move || {
        for _ in 0..10_000 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    });
    assert!(opened.await.unwrap(), "the port opened");
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(exit.success(), "a graceful stop exits 0: {exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_ingest_stream_ends_unavailable_within_the_drain_time_keeping_what_it_sent() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.limits.shutdown_drain_ms = 1_000;
    let server = TestServer::start_with(data_dir, config.clone()).await;
    let client = server.client().await;
    let (items, received) = tokio::sync::mpsc::channel::<pb::IngestRequest>(16);
    for n in 0..10 {
        let mut event = track(vec![user("streamer")], "Page Viewed");
        event.message_id = format!("stream-{n}");
        items
            .send(pb::IngestRequest {
                item: Some(pb::ingest_request::Item::Track(event)),
            })
            .await
            .unwrap();
    }
    let mut streaming = client.clone();
    // The client never ends its stream: `items` stays open.
    let call = tokio::spawn(async move {
        streaming
            .ingest(tokio_stream::wrappers::ReceiverStream::new(received))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let data_dir = server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        started.elapsed()
    );
    let answer = call.await.unwrap();
    let status = answer.expect_err("the stream was ended by the server");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    drop(items);

    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    let profile = get_by(&mut client, user("streamer")).await.unwrap();
    assert_eq!(profile.event_count, 10, "what the stream sent is durable");
    server.stop().await;
}
