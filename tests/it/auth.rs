//! Bearer tokens and scopes: every call is checked before a handler runs,
//! health stays open, and a refused write stores nothing.

use sightline::api::pb;
use sightline::cli::{BearerToken, ProfileClient, profile_client};
use sightline::config::Config;
use sightline::security::Scope;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

use crate::support::*;

struct Tokens {
    reader: String,
    writer: String,
    admin: String,
}

async fn start_with_tokens() -> (TestServer, Tokens) {
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = test_config(&data_dir);
    let tokens = Tokens {
        reader: add_token(&mut config, "reader", &[Scope::ProfilesRead]),
        writer: add_token(&mut config, "writer", &[Scope::EventsWrite]),
        admin: add_token(&mut config, "ops", &[Scope::Admin]),
    };
    (TestServer::start_with(data_dir, config).await, tokens)
}

fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Calls every ProfileService method once with an empty request.
async fn call_every_method(client: &mut ProfileClient) -> Vec<(&'static str, Code)> {
    let lookup = Some(pb::get_profile_request::Lookup::ProfileId("p1".to_owned()));
    vec![
        (
            "Identify",
            code(client.identify(pb::IdentifyRequest::default()).await),
        ),
        (
            "Track",
            code(client.track(pb::TrackRequest::default()).await),
        ),
        (
            "Ingest",
            code(
                client
                    .ingest(futures::stream::empty::<pb::IngestRequest>())
                    .await,
            ),
        ),
        (
            "GetProfile",
            code(
                client
                    .get_profile(pb::GetProfileRequest {
                        lookup,
                        events_limit: 0,
                    })
                    .await,
            ),
        ),
        (
            "Unmerge",
            code(client.unmerge(pb::UnmergeRequest::default()).await),
        ),
        (
            "ListMatchCandidates",
            code(
                client
                    .list_match_candidates(pb::ListMatchCandidatesRequest::default())
                    .await,
            ),
        ),
        (
            "ReviewMatchCandidate",
            code(
                client
                    .review_match_candidate(pb::ReviewMatchCandidateRequest::default())
                    .await,
            ),
        ),
        (
            "RunMatching",
            code(client.run_matching(pb::RunMatchingRequest::default()).await),
        ),
        (
            "UpdateConsent",
            code(
                client
                    .update_consent(pb::UpdateConsentRequest::default())
                    .await,
            ),
        ),
        (
            "RunMaintenance",
            code(
                client
                    .run_maintenance(pb::RunMaintenanceRequest::default())
                    .await,
            ),
        ),
    ]
}

#[tokio::test]
async fn every_call_without_a_valid_token_is_unauthenticated() {
    let (server, _tokens) = start_with_tokens().await;
    let _ = server.client().await;
    let mut without_token = profile_client(server.channel().await, BearerToken::default());
    for (method, code) in call_every_method(&mut without_token).await {
        assert_eq!(code, Code::Unauthenticated, "{method} without a token");
    }
    let mut forged = server.client_with_token(&"0".repeat(64)).await;
    for (method, code) in call_every_method(&mut forged).await {
        assert_eq!(
            code,
            Code::Unauthenticated,
            "{method} with an unknown token"
        );
    }
}

#[tokio::test]
async fn an_admin_token_reaches_every_handler() {
    let (server, tokens) = start_with_tokens().await;
    let mut admin = server.client_with_token(&tokens.admin).await;
    for (method, code) in call_every_method(&mut admin).await {
        // Empty requests are invalid or name nothing; what matters is that
        // the handler answered, not the authentication layer.
        assert!(
            !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
            "{method}: {code:?}"
        );
    }
}

#[tokio::test]
async fn a_read_token_cannot_write_and_its_refused_write_stores_nothing() {
    let (server, tokens) = start_with_tokens().await;
    let mut reader = server.client_with_token(&tokens.reader).await;
    let refused = reader
        .identify(identify(vec![email("jane@example.com")]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("events:write"),
        "{}",
        refused.message()
    );

    let lookup = pb::get_profile_request::Lookup::Identifier(email("jane@example.com"));
    let missing = reader
        .get_profile(pb::GetProfileRequest {
            lookup: Some(lookup.clone()),
            events_limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let mut writer = server.client_with_token(&tokens.writer).await;
    writer
        .identify(identify(vec![email("jane@example.com")]))
        .await
        .expect("events:write may identify");
    let denied = writer
        .get_profile(pb::GetProfileRequest {
            lookup: Some(lookup.clone()),
            events_limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let profile = reader
        .get_profile(pb::GetProfileRequest {
            lookup: Some(lookup),
            events_limit: 0,
        })
        .await
        .expect("profiles:read may read")
        .into_inner();
    assert!(profile.profile.is_some());

    for (method, code) in call_every_method(&mut reader).await {
        let allowed = matches!(method, "GetProfile" | "ListMatchCandidates");
        assert_eq!(
            code == Code::PermissionDenied,
            !allowed,
            "{method} with profiles:read: {code:?}"
        );
    }
}

#[tokio::test]
async fn health_is_open_and_reflection_needs_any_valid_token() {
    let (server, tokens) = start_with_tokens().await;
    let _ = server.client().await;
    let mut health = HealthClient::new(server.channel().await);
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);

    let list_services = || {
        futures::stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let refused = reflection
        .server_reflection_info(list_services())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // A token with no relation to reflection is enough to list services.
    let token = BearerToken::new(Some(&tokens.reader)).unwrap();
    let mut reflection = ServerReflectionClient::with_interceptor(server.channel().await, token);
    let mut responses = reflection
        .server_reflection_info(list_services())
        .await
        .expect("any valid token may reflect")
        .into_inner();
    assert!(responses.message().await.unwrap().is_some());
}

#[tokio::test]
async fn a_created_token_works_once_its_printed_entry_is_configured() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args([
            "token",
            "create",
            "--name",
            "crm-sync",
            "--scopes",
            "events:write,profiles:read",
        ])
        .output()
        .expect("run sightline token create");
    assert!(output.status.success(), "{output:?}");
    let shown = String::from_utf8(output.stderr).expect("utf-8");
    let token = shown
        .lines()
        .find_map(|line| line.strip_prefix("token: "))
        .expect("the token line")
        .to_owned();
    let entry = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        !entry.contains(&token),
        "the configuration entry holds only the hash"
    );
    // Appended to a configuration file as printed, it is valid TOML.
    let config_dir = tempfile::tempdir().unwrap();
    let config_path = config_dir.path().join("sightline.toml");
    std::fs::write(
        &config_path,
        format!("listen = \"127.0.0.1:50051\"\n{entry}"),
    )
    .unwrap();
    let pasted = Config::from_file(&config_path).expect("the entry appends as valid TOML");

    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.auth = pasted.auth;
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client_with_token(&token).await;
    let written = client
        .identify(identify(vec![user("u-1")]))
        .await
        .expect("events:write")
        .into_inner();
    let read = client
        .get_profile(pb::GetProfileRequest {
            lookup: Some(pb::get_profile_request::Lookup::ProfileId(
                written.profile_id.clone(),
            )),
            events_limit: 0,
        })
        .await
        .expect("profiles:read")
        .into_inner();
    assert_eq!(read.profile.unwrap().profile_id, written.profile_id);
}

#[tokio::test]
async fn a_non_loopback_address_without_tls_and_tokens_is_refused() {
    let data_dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let result = sightline::server::run(
        listener,
        test_config(&data_dir),
        std::sync::Arc::new(sightline::model::SystemClock),
        std::future::pending(),
    )
    .await;
    let error = result.expect_err("refused");
    assert!(error.to_string().contains("refusing to serve"), "{error}");

    // The binary refuses before binding, and says why.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(data_dir.path().join("never-created"))
        .output()
        .expect("run sightline serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");
    assert!(!data_dir.path().join("never-created").exists());
}

#[tokio::test]
async fn erasure_needs_its_scope_and_reads_are_logged_under_the_token_name() {
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = test_config(&data_dir);
    let shop = add_token(
        &mut config,
        "web-shop",
        &[Scope::ProfilesRead, Scope::EventsWrite],
    );
    let data_team = add_token(&mut config, "data-team", &[Scope::PrivacyExport]);
    let server = TestServer::start_with(data_dir, config).await;

    let mut shop_client = server.client_with_token(&shop).await;
    let who = email("logged.reader@example.com");
    shop_client
        .identify(identify(vec![who.clone()]))
        .await
        .expect("identify");
    shop_client
        .get_profile(pb::GetProfileRequest {
            lookup: Some(pb::get_profile_request::Lookup::Identifier(who.clone())),
            events_limit: 0,
        })
        .await
        .expect("read");

    // A token without `privacy:erase` is refused and the person stays.
    for token in [&shop, &data_team] {
        let mut privacy = pb::privacy_service_client::PrivacyServiceClient::with_interceptor(
            server.channel().await,
            BearerToken::new(Some(token)).expect("header value"),
        );
        let refused = privacy
            .erase_subject(pb::EraseSubjectRequest {
                lookup: Some(pb::erase_subject_request::Lookup::Identifier(who.clone())),
                ..Default::default()
            })
            .await
            .expect_err("no erase scope");
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    shop_client
        .get_profile(pb::GetProfileRequest {
            lookup: Some(pb::get_profile_request::Lookup::Identifier(who.clone())),
            events_limit: 0,
        })
        .await
        .expect("still there");

    let mut privacy = pb::privacy_service_client::PrivacyServiceClient::with_interceptor(
        server.channel().await,
        BearerToken::new(Some(&data_team)).expect("header value"),
    );
    // The access log is written in the background.
    for _ in 0..500 {
        let mut stream = privacy
            .export_subject(pb::ExportSubjectRequest {
                lookup: Some(pb::export_subject_request::Lookup::Identifier(who.clone())),
                ..Default::default()
            })
            .await
            .expect("export")
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.expect("chunk") {
            bytes.extend(chunk.data);
        }
        let document: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        if let Some(entry) = document["profile"]["access_log"].get(0) {
            assert_eq!(entry["caller"], "web-shop");
            let requests = privacy
                .list_privacy_requests(pb::ListPrivacyRequestsRequest::default())
                .await
                .expect("list")
                .into_inner()
                .requests;
            assert_eq!(requests[0].caller, "data-team");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the read never reached the access log");
}
