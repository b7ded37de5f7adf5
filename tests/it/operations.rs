//! What operators and generic gRPC clients rely on: health, reflection, and
//! the binary's graceful shutdown on SIGTERM.

use std::process::Command;

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
    let port = free_port();
    let mut child = spawn_binary(data_dir.path(), port);
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

    let port = free_port();
    let mut child = spawn_binary(data_dir.path(), port);
    let mut client = connect_port(port).await;
    let profile = get_by(&mut client, user("sig")).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(profile.unwrap().event_count, 20);
}
