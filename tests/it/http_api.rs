//! The HTTP API: the Segment tracking spec as the real SDKs send it, and
//! JSON reads of profiles. Each test starts a real server with its HTTP
//! listener on an ephemeral port and checks what was stored through gRPC.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sightline::api::pb;
use sightline::security::Scope;

use crate::sdk;
use crate::support::*;

struct Keys {
    write: String,
    read: String,
    /// For the checks through gRPC.
    admin: String,
}

/// A server with an HTTP listener and two tokens: a write key for the
/// SDKs (`events:write`) and a reader (`profiles:read`).
async fn start() -> (TestServer, Keys) {
    start_serving(false).await
}

/// As `start`, with a metrics endpoint too when asked.
async fn start_serving(metrics: bool) -> (TestServer, Keys) {
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = test_config(&data_dir);
    let keys = Keys {
        write: add_token(&mut config, "web", &[Scope::EventsWrite]),
        read: add_token(&mut config, "backend", &[Scope::ProfilesRead]),
        admin: add_token(&mut config, "admin", &[Scope::Admin]),
    };
    let extras = Extras {
        http: true,
        metrics,
    };
    (
        TestServer::start_with_extras(data_dir, config, extras).await,
        keys,
    )
}

fn http_root(server: &TestServer) -> String {
    let address: SocketAddr = server.http_address.expect("an HTTP listener");
    format!("http://{address}")
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

struct Reply {
    status: u16,
    body: Value,
}

async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    extra_headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", http_root(server)))
        .header("content-type", "application/json");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    for (name, value) in extra_headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = client.request(request).await.expect("HTTP answer");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "status {status}: body is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Reply { status, body }
}

async fn post(server: &TestServer, path: &str, key: &str, body: &Value) -> Reply {
    send(
        server,
        "POST",
        path,
        Some(&basic(key)),
        &[],
        body.to_string().into_bytes(),
    )
    .await
}

async fn profile_of(
    server: &TestServer,
    keys: &Keys,
    identifier: pb::Identifier,
) -> Option<pb::Profile> {
    let mut client = server.client_with_token(&keys.admin).await;
    let request = pb::GetProfileRequest {
        lookup: Some(pb::get_profile_request::Lookup::Identifier(identifier)),
        events_limit: 100,
    };
    match client.get_profile(request).await {
        Ok(response) => response.into_inner().profile,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("GetProfile: {status}"),
    }
}

fn event_names(profile: &pb::Profile) -> Vec<String> {
    profile
        .events
        .iter()
        .map(|event| event.name.clone())
        .collect()
}

/// What the SDK scripts send: page as an anonymous visitor, identify with
/// an email, alias the visit to the user, an order.
fn assert_one_journey(profile: &pb::Profile, email_address: &str, revenue: f64) {
    let values = identifier_values(profile);
    for expected in [
        "user_id:u-1".to_owned(),
        "anonymous_id:anon-1".to_owned(),
        format!("email:{email_address}"),
    ] {
        assert!(
            values.contains(&expected),
            "{expected} on the profile: {values:?}"
        );
    }
    let names = event_names(profile);
    assert!(names.contains(&"Page Viewed".to_owned()), "{names:?}");
    assert!(names.contains(&"Order Completed".to_owned()), "{names:?}");
    let computed = profile.computed.as_ref().expect("computed traits");
    assert_eq!(computed.frequency, 1);
    assert!((computed.monetary - revenue).abs() < 1e-9, "{computed:?}");
    assert_eq!(trait_text(profile, "first_name").as_deref(), Some("Ada"));
}

fn run_script(command: &mut Command) -> Value {
    let output = command.output().expect("run the SDK script");
    assert!(
        output.status.success(),
        "SDK script failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("script output: {stdout}"))
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

fn python_send(server: &TestServer, key: &str, email_address: &str, revenue: f64) -> Value {
    let dir = sdk::python();
    run_script(
        Command::new("python3")
            .arg(script("python/send.py"))
            .args([&http_root(server), key, "u-1", "anon-1", email_address])
            .arg(revenue.to_string())
            .env("PYTHONPATH", dir),
    )
}

fn node_send(server: &TestServer, key: &str, email_address: &str, revenue: f64) -> Value {
    let dir = sdk::node();
    run_script(
        Command::new("node")
            .arg(script("node/send.js"))
            .args([&http_root(server), key, "u-1", "anon-1", email_address])
            .arg(revenue.to_string())
            .env("NODE_PATH", dir.join("node_modules")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn segment_analytics_python_sends_a_journey_that_becomes_one_profile() {
    let (server, keys) = start().await;
    let key = keys.write.clone();
    let output = {
        let server = &server;
        tokio::task::block_in_place(|| python_send(server, &key, "ada@example.com", 42.5))
    };
    assert_eq!(output["errors"], json!([]), "{output}");
    let profile = profile_of(&server, &keys, email("ada@example.com"))
        .await
        .expect("the person is stored");
    assert_one_journey(&profile, "ada@example.com", 42.5);
    let by_user = profile_of(&server, &keys, user("u-1"))
        .await
        .expect("by user id");
    assert_eq!(by_user.profile_id, profile.profile_id);

    // A wrong write key is refused by the SDK's request and stores nothing.
    let output = tokio::task::block_in_place(|| {
        python_send(&server, "not-a-key", "grace@example.com", 10.0)
    });
    let errors = output["errors"].as_array().expect("errors");
    assert!(!errors.is_empty(), "{output}");
    assert!(
        errors[0].as_str().unwrap_or_default().contains("401"),
        "{output}"
    );
    assert!(
        profile_of(&server, &keys, email("grace@example.com"))
            .await
            .is_none()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_node_sends_a_journey_and_a_replayed_batch_is_a_duplicate() {
    let (server, keys) = start().await;
    let output =
        tokio::task::block_in_place(|| node_send(&server, &keys.write, "ada@example.com", 19.99));
    assert_eq!(output["errors"], json!([]), "{output}");
    let statuses = output["statuses"].as_array().expect("statuses");
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| s == 200),
        "{output}"
    );
    let profile = profile_of(&server, &keys, email("ada@example.com"))
        .await
        .expect("the person is stored");
    assert_one_journey(&profile, "ada@example.com", 19.99);

    // The SDK's own batches, sent again, change nothing.
    for body in output["bodies"].as_array().expect("bodies") {
        let body = body.as_str().expect("a body is text");
        let reply = send(
            &server,
            "POST",
            "/v1/batch",
            Some(&basic(&keys.write)),
            &[],
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["accepted"], 0, "{}", reply.body);
        assert!(
            reply.body["duplicate"].as_u64().unwrap_or(0) > 0,
            "{}",
            reply.body
        );
    }
    let again = profile_of(&server, &keys, email("ada@example.com"))
        .await
        .expect("stored");
    assert_eq!(again.event_count, profile.event_count);

    // A wrong write key: 401 through the SDK, nothing stored.
    let output =
        tokio::task::block_in_place(|| node_send(&server, "not-a-key", "grace@example.com", 10.0));
    let statuses = output["statuses"].as_array().expect("statuses");
    assert!(statuses.iter().all(|s| s == 401), "{output}");
    assert!(
        profile_of(&server, &keys, email("grace@example.com"))
            .await
            .is_none()
    );
    server.stop().await;
}

fn order(user_id: &str, message_id: &str, revenue: f64) -> Value {
    json!({
        "type": "track", "userId": user_id, "messageId": message_id,
        "event": "Order Completed",
        "properties": {"order_id": message_id, "revenue": revenue},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_batch_or_bad_credentials_store_nothing() {
    let (server, keys) = start().await;
    // 600 KB of otherwise valid messages.
    let padding = "x".repeat(6_000);
    let batch: Vec<Value> = (0..100)
        .map(|n| {
            let mut message = order("big", &format!("m{n}"), 1.0);
            message["properties"]["note"] = json!(padding);
            message
        })
        .collect();
    let reply = post(&server, "/v1/batch", &keys.write, &json!({"batch": batch})).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["success"], false);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("at most"),
        "{}",
        reply.body
    );
    assert!(profile_of(&server, &keys, user("big")).await.is_none());

    let small = json!({"batch": [order("small", "s1", 5.0)]});
    for authorization in [
        None,
        Some(basic("wrong")),
        Some(format!("Bearer {}", keys.read)),
    ] {
        let reply = send(
            &server,
            "POST",
            "/v1/batch",
            authorization.as_deref(),
            &[],
            small.to_string().into_bytes(),
        )
        .await;
        let expected = if authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer"))
        {
            403
        } else {
            401
        };
        assert_eq!(reply.status, expected, "{authorization:?}: {}", reply.body);
        assert_eq!(reply.body["success"], false);
    }
    assert!(profile_of(&server, &keys, user("small")).await.is_none());
    // A bearer token with events:write is accepted as well as Basic.
    let reply = send(
        &server,
        "POST",
        "/v1/batch",
        Some(&format!("Bearer {}", keys.write)),
        &[],
        small.to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(profile_of(&server, &keys, user("small")).await.is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_message_in_a_batch_is_reported_and_the_others_are_stored() {
    let (server, keys) = start().await;
    let batch = json!({"batch": [
        order("u-ok", "ok-1", 10.0),
        {"type": "track", "userId": "u-bad", "messageId": "bad-1"},
        {"type": "teleport", "userId": "u-bad", "messageId": "bad-2"},
        {"type": "track", "userId": "u-bad", "event": "Order Completed", "messageId": "bad-3",
         "properties": {"revenue": "lots"}},
        {"type": "identify", "userId": "u-ok", "messageId": "ok-2",
         "traits": {"email": "ok@example.com", "phone": "not a phone", "plan": "pro"}},
        {"type": "track", "userId": "u-huge", "event": "x", "messageId": "bad-4",
         "properties": {"note": "y".repeat(40_000)}},
    ]});
    let reply = post(&server, "/v1/batch", &keys.write, &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["accepted"], 2, "{}", reply.body);
    assert_eq!(reply.body["rejected"], 4, "{}", reply.body);
    assert_eq!(reply.body["success"], false);
    let rejections = reply.body["rejections"].as_array().expect("rejections");
    let indices: Vec<u64> = rejections
        .iter()
        .map(|r| r["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indices, [1, 2, 3, 5], "{}", reply.body);
    assert_eq!(rejections[0]["field"], "event");
    assert_eq!(rejections[0]["messageId"], "bad-1");
    // The malformed phone is dropped and reported; the message counts.
    let ignored = reply.body["ignored"].as_array().expect("ignored");
    assert_eq!(ignored[0]["field"], "traits.phone", "{}", reply.body);
    let profile = profile_of(&server, &keys, user("u-ok"))
        .await
        .expect("stored");
    assert!(identifier_values(&profile).contains(&"email:ok@example.com".to_owned()));
    assert_eq!(trait_text(&profile, "plan").as_deref(), Some("pro"));
    assert!(profile_of(&server, &keys, user("u-bad")).await.is_none());
    assert!(profile_of(&server, &keys, user("u-huge")).await.is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_calls_map_the_spec_onto_profiles() {
    let (server, keys) = start().await;
    let calls = [
        (
            "/v1/identify",
            json!({"userId": "u-7", "messageId": "i1",
                   "traits": {"email": "Kim@Example.com", "firstName": "Kim", "lastName": "Lee",
                              "birthday": "1990-04-01T00:00:00Z",
                              "address": {"postalCode": "SW1A 1AA", "city": "London"}},
                   "context": {"device": {"id": "device-7"}}}),
        ),
        (
            "/v1/screen",
            json!({"userId": "u-7", "name": "Basket", "messageId": "s1"}),
        ),
        (
            "/v1/group",
            json!({"userId": "u-7", "groupId": "acme", "traits": {"plan": "team"}, "messageId": "g1"}),
        ),
        (
            "/v1/group",
            json!({"userId": "u-7", "groupId": "globex", "messageId": "g2"}),
        ),
        (
            "/v1/track",
            json!({"anonymousId": "visitor-7", "event": "Product Viewed", "messageId": "t1",
                   "properties": {"product_id": "sku-1", "category": "shoes"},
                   "context": {"traits": {"email": "kim@example.com"}}}),
        ),
    ];
    for (path, message) in calls {
        let reply = post(&server, path, &keys.write, &message).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.body, json!({"success": true}), "{path}");
    }
    let profile = profile_of(&server, &keys, user("u-7"))
        .await
        .expect("stored");
    let values = identifier_values(&profile);
    for expected in [
        "email:kim@example.com",
        "device_id:device-7",
        "anonymous_id:visitor-7",
    ] {
        assert!(values.contains(&expected.to_owned()), "{values:?}");
    }
    assert_eq!(trait_text(&profile, "first_name").as_deref(), Some("Kim"));
    assert_eq!(
        trait_text(&profile, "birthday").as_deref(),
        Some("1990-04-01")
    );
    let traits = profile.traits.as_ref().expect("traits");
    let groups = traits.fields.get("groups").expect("groups trait");
    let Some(prost_types::value::Kind::StructValue(groups)) = &groups.kind else {
        panic!("groups is an object: {groups:?}");
    };
    assert!(groups.fields.contains_key("acme") && groups.fields.contains_key("globex"));
    let address = traits.fields.get("address").expect("address");
    let Some(prost_types::value::Kind::StructValue(address)) = &address.kind else {
        panic!("address is an object");
    };
    assert!(address.fields.contains_key("postal_code"), "{address:?}");
    let names = event_names(&profile);
    assert!(names.contains(&"Screen Viewed".to_owned()), "{names:?}");
    assert!(names.contains(&"Product Viewed".to_owned()), "{names:?}");

    // The same message again is a duplicate and changes nothing.
    let reply = post(
        &server,
        "/v1/screen",
        &keys.write,
        &json!({"userId": "u-7", "name": "Basket", "messageId": "s1"}),
    )
    .await;
    assert_eq!(reply.body, json!({"success": true, "duplicate": true}));
    let again = profile_of(&server, &keys, user("u-7"))
        .await
        .expect("stored");
    assert_eq!(again.event_count, profile.event_count);

    // Malformed single calls: 400 naming the problem, nothing stored.
    let bad = [
        ("/v1/track", b"{not json".to_vec()),
        (
            "/v1/track",
            json!({"userId": "u-8"}).to_string().into_bytes(),
        ),
        (
            "/v1/alias",
            json!({"userId": "u-8"}).to_string().into_bytes(),
        ),
        (
            "/v1/identify",
            json!({"userId": "u-8", "traits": {"note": "z".repeat(40_000)}})
                .to_string()
                .into_bytes(),
        ),
    ];
    for (path, body) in bad {
        let reply = send(&server, "POST", path, Some(&basic(&keys.write)), &[], body).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.body["code"], "invalid_request");
        assert!(
            !reply.body["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        );
    }
    assert!(profile_of(&server, &keys, user("u-8")).await.is_none());
    let reply = post(&server, "/v1/teleport", &keys.write, &json!({})).await;
    assert_eq!(reply.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_bodies_are_accepted_and_the_event_time_is_corrected_for_client_skew() {
    let (server, keys) = start().await;
    // The client's clock is a day ahead; the order happened a minute before
    // it sent the batch.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let rfc3339 = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("a time")
            .to_rfc3339()
    };
    let client_now = now_ms + 86_400_000;
    let mut message = order("u-z", "z1", 3.0);
    message["timestamp"] = json!(rfc3339(client_now - 60_000));
    let body = json!({"batch": [message], "sentAt": rfc3339(client_now)}).to_string();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body.as_bytes()).expect("gzip");
    let reply = send(
        &server,
        "POST",
        "/v1/batch",
        Some(&basic(&keys.write)),
        &[("content-encoding", "gzip")],
        encoder.finish().expect("gzip"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["accepted"], 1, "{}", reply.body);
    let profile = profile_of(&server, &keys, user("u-z"))
        .await
        .expect("stored");
    let at = profile.events[0].timestamp.as_ref().expect("time").seconds;
    let expected = (now_ms - 60_000) / 1000;
    assert!(
        (at - expected).abs() < 30,
        "event at {at}, expected ~{expected}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_are_read_as_json_by_identifier_or_id_with_the_fields_asked_for() {
    let (server, keys) = start_serving(true).await;
    let metrics_port = server.metrics_port.expect("a metrics listener");
    let batch = json!({"batch": [
        {"type": "identify", "userId": "u-r", "messageId": "r1",
         "traits": {"email": "reader@example.com", "firstName": "Rae"}},
        order("u-r", "r2", 25.0),
    ]});
    assert_eq!(
        post(&server, "/v1/batch", &keys.write, &batch).await.status,
        200
    );
    let bearer = format!("Bearer {}", keys.read);
    let read = |path: String| {
        let bearer = bearer.clone();
        let server = &server;
        async move { send(server, "GET", &path, Some(&bearer), &[], Vec::new()).await }
    };
    let by_email = read("/v1/profiles/email:reader%40example.com".to_owned()).await;
    assert_eq!(by_email.status, 200, "{}", by_email.body);
    let profile = &by_email.body;
    assert_eq!(profile["traits"]["first_name"], "Rae");
    assert_eq!(profile["computed"]["frequency"], 1);
    assert_eq!(profile["computed"]["monetary"], 25.0);
    assert_eq!(profile["event_count"], 1);
    assert_eq!(profile["events"][0]["name"], "Order Completed");
    assert!(profile["segments"].is_array() && profile["consent"].is_array());
    let grpc = profile_of(&server, &keys, user("u-r"))
        .await
        .expect("stored");
    assert_eq!(profile["profile_id"], grpc.profile_id);

    let by_id = read(format!("/v1/profiles/{}?fields=traits", grpc.profile_id)).await;
    assert_eq!(by_id.status, 200, "{}", by_id.body);
    assert_eq!(by_id.body["traits"]["first_name"], "Rae");
    assert!(by_id.body.get("events").is_none() && by_id.body.get("computed").is_none());

    assert_eq!(
        read("/v1/profiles/email:nobody%40example.com".to_owned())
            .await
            .status,
        404
    );
    assert_eq!(read("/v1/profiles/p0x".to_owned()).await.status, 400);
    assert_eq!(
        read("/v1/profiles/email:not-an-email".to_owned())
            .await
            .status,
        400
    );
    assert_eq!(
        read(format!("/v1/profiles/{}?fields=secrets", grpc.profile_id))
            .await
            .status,
        400
    );
    // The write key may not read, nor may a caller without a token.
    let write_key = send(
        &server,
        "GET",
        "/v1/profiles/user_id:u-r",
        Some(&basic(&keys.write)),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(write_key.status, 403);
    let anonymous = send(
        &server,
        "GET",
        "/v1/profiles/user_id:u-r",
        None,
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(anonymous.status, 401);

    // Each answer is counted by route and status.
    let scraped = crate::metrics::scrape(metrics_port, "/metrics").await;
    let count = |labels: &str| {
        crate::metrics::value(
            &scraped,
            &format!("sightline_http_requests_total{{{labels}}}"),
        )
    };
    assert_eq!(
        count("route=\"/v1/batch\",status=\"200\""),
        Some(1.0),
        "{scraped}"
    );
    assert_eq!(count("route=\"/v1/profiles\",status=\"404\""), Some(1.0));
    assert_eq!(count("route=\"/v1/profiles\",status=\"401\""), Some(1.0));
    assert!(
        scraped.contains("sightline_http_request_duration_seconds_bucket{route=\"/v1/profiles\"")
    );
    server.stop().await;
}
