//! Overload: calls beyond `limits.calls_in_flight_max` are refused at once
//! with RESOURCE_EXHAUSTED, never hang, never store anything, and the
//! server serves normally afterwards. Oversized messages get a clear status.

use std::time::Duration;

use futures::StreamExt;
use sightline::api::pb::{self, ingest_request::Item};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::*;

/// Only a guard against a hang: a passing run takes a fraction of it.
const HANG_GUARD: Duration = Duration::from_secs(120);
const FLOOD_CALLS: usize = 10_000;
const CONNECTIONS: usize = 16;

async fn start_with_limit(calls_in_flight_max: usize) -> TestServer {
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = test_config(&data_dir);
    config.limits.calls_in_flight_max = calls_in_flight_max;
    TestServer::start_with(data_dir, config).await
}

async fn clients(server: &TestServer) -> Vec<Client> {
    let _ = server.client().await;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(Client::new(server.channel().await));
    }
    clients
}

/// Sends every call at once, spread over the connections; each task
/// returns its call's outcome.
async fn flood(clients: &[Client], user_prefix: &str) -> Vec<Result<(), tonic::Status>> {
    let tasks: Vec<_> = (0..FLOOD_CALLS)
        .map(|n| {
            let mut client = clients[n % clients.len()].clone();
            let request = identify(vec![user(&format!("{user_prefix}-{n}"))]);
            tokio::spawn(async move { client.identify(request).await.map(|_| ()) })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.expect("call task"));
    }
    outcomes
}

async fn assert_serving(server: &TestServer) {
    let mut health = HealthClient::new(server.channel().await);
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
}

/// An `Ingest` stream that stays open, holding its slot, until the sender
/// is dropped.
fn open_ingest(
    client: &Client,
    user_id: &str,
) -> (
    mpsc::Sender<pb::IngestRequest>,
    tokio::task::JoinHandle<Result<pb::IngestResponse, tonic::Status>>,
) {
    let (sender, receiver) = mpsc::channel(4);
    let first = pb::IngestRequest {
        item: Some(Item::Identify(identify(vec![user(user_id)]))),
    };
    sender.try_send(first).expect("room for one item");
    let mut client = client.clone();
    let call = tokio::spawn(async move {
        client
            .ingest(ReceiverStream::new(receiver))
            .await
            .map(|response| response.into_inner())
    });
    (sender, call)
}

#[tokio::test]
async fn calls_beyond_the_limit_are_refused_while_open_streams_hold_every_slot() {
    let limit = 4;
    let server = start_with_limit(limit).await;
    let clients = clients(&server).await;
    let outcome = tokio::time::timeout(HANG_GUARD, async {
        let held: Vec<_> = (0..limit)
            .map(|n| open_ingest(&clients[n], &format!("held-{n}")))
            .collect();
        // Wait until the server counts all open streams: a probe is refused.
        let mut probe = clients[limit].clone();
        let mut probes = 0;
        while get_by(&mut probe, user("held-0"))
            .await
            .map_err(|s| s.code())
            != Err(Code::ResourceExhausted)
        {
            probes += 1;
            assert!(probes < 10_000, "the open streams never filled the limit");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let outcomes = flood(&clients, "shed").await;
        for outcome in &outcomes {
            let status = outcome.as_ref().expect_err("every slot is held");
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        }
        assert_serving(&server).await;

        // Closing the streams finishes their calls and frees the slots.
        for (sender, call) in held {
            drop(sender);
            let summary = call.await.expect("ingest task").expect("ingest");
            assert_eq!(summary.accepted, 1);
        }
        let mut client = clients[0].clone();
        for n in 0..limit {
            get_by(&mut client, user(&format!("held-{n}")))
                .await
                .expect("the held stream's item is stored");
        }
        for n in (0..FLOOD_CALLS).step_by(997) {
            let missing = get_by(&mut client, user(&format!("shed-{n}")))
                .await
                .unwrap_err();
            assert_eq!(
                missing.code(),
                Code::NotFound,
                "a refused call stored nothing"
            );
        }
    })
    .await;
    outcome.expect("no call hung");
}

#[tokio::test]
async fn a_flood_is_partly_refused_and_every_accepted_write_is_kept() {
    let server = start_with_limit(8).await;
    let clients = clients(&server).await;
    let outcome = tokio::time::timeout(HANG_GUARD, async {
        let outcomes = flood(&clients, "flood").await;
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (n, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(()) => accepted.push(n),
                Err(status) if status.code() == Code::ResourceExhausted => refused.push(n),
                Err(status) => panic!("call {n}: unexpected {status:?}"),
            }
        }
        assert!(!accepted.is_empty(), "some calls got through");
        assert!(!refused.is_empty(), "the excess was refused");
        println!("{} accepted, {} refused", accepted.len(), refused.len());
        assert_serving(&server).await;

        // Fewer lookups in flight than the limit: none is refused.
        let check = |n: usize, expected: Code| {
            let mut client = clients[n % clients.len()].clone();
            async move {
                let code = match get_by(&mut client, user(&format!("flood-{n}"))).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                };
                assert_eq!(code, expected, "flood-{n}");
            }
        };
        let accepted_checks = accepted.iter().map(|&n| check(n, Code::Ok));
        futures::stream::iter(accepted_checks)
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
        // A sample suffices: refusal happens before any handler runs.
        let refused_checks = refused
            .iter()
            .step_by(97)
            .map(|&n| check(n, Code::NotFound));
        futures::stream::iter(refused_checks)
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
    })
    .await;
    outcome.expect("no call hung");
}

#[tokio::test]
async fn oversized_messages_get_a_clear_status_and_the_server_keeps_serving() {
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = test_config(&data_dir);
    config.limits.request_message_bytes_max = 16 * 1024;
    config.limits.response_message_bytes_max = 32 * 1024;
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;

    let mut request = identify(vec![user("big")]);
    request.traits = traits(&[("notes", text(&"x".repeat(20 * 1024)))]);
    let refused = client.identify(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("too large"),
        "{}",
        refused.message()
    );
    assert_eq!(
        get_by(&mut client, user("big")).await.unwrap_err().code(),
        Code::NotFound
    );

    // Each write fits; together they make a profile too large to send.
    for n in 0..4 {
        let mut request = identify(vec![user("wide")]);
        request.traits = traits(&[(&format!("notes_{n}"), text(&"y".repeat(12 * 1024)))]);
        client
            .identify(request)
            .await
            .expect("a message under the limit");
    }
    let too_large = get_by(&mut client, user("wide")).await.unwrap_err();
    assert_eq!(too_large.code(), Code::OutOfRange, "{too_large:?}");

    client
        .identify(identify(vec![user("small")]))
        .await
        .expect("normal calls still served");
}
