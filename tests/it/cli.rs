//! The command-line client against a real server, as an operator types it.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::*;

fn sightline(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
    // No scheme: `host:port` is how people write an address.
    command
        .args(args)
        .args(["--server", &server.address.to_string()]);
    command
}

fn succeeded(output: Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_takes_an_address_without_a_scheme_and_a_closed_pipe_is_not_a_panic() {
    let server = TestServer::start().await;
    let _ = server.client().await;
    let identified = tokio::task::block_in_place(|| {
        sightline(&server, &["identify", "--id", "email:cli@example.com"])
            .output()
            .expect("run")
    });
    let identified = succeeded(identified);
    assert_eq!(identified["outcome"], "RESOLUTION_OUTCOME_CREATED");

    // The reader goes away before the answer is written, as `| head` does.
    let mut child = sightline(&server, &["profile", "--id", "email:cli@example.com"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    drop(child.stdout.take());
    let output = tokio::task::block_in_place(|| child.wait_with_output()).expect("ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    server.stop().await;
}

/// Runs a client command that must succeed and answers its JSON.
fn run(server: &TestServer, args: &[&str]) -> Value {
    let output = tokio::task::block_in_place(|| sightline(server, args).output().expect("run"));
    assert!(
        output.status.success(),
        "sightline {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "sightline {args:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Runs a client command that must fail; answers what it printed.
fn refused(server: &TestServer, args: &[&str]) -> String {
    let output = tokio::task::block_in_place(|| sightline(server, args).output().expect("run"));
    assert!(!output.status.success(), "sightline {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn identify_track_and_profile_show_everything_and_take_a_timestamp() {
    let server = TestServer::start().await;
    let _ = server.client().await;
    let ann = run(
        &server,
        &[
            "identify",
            "--id",
            "email:ann@example.com",
            "--id",
            "user_id:u-1",
            "--trait",
            "first_name=Ann",
            "--timestamp",
            "2024-05-01T12:00:00Z",
        ],
    );
    assert_eq!(ann["outcome"], "RESOLUTION_OUTCOME_CREATED");
    run(&server, &["identify", "--id", "user_id:u-2"]);
    // A second user id for Ann is refused: the answer says so.
    let blocked = run(
        &server,
        &[
            "identify",
            "--id",
            "email:ann@example.com",
            "--id",
            "user_id:u-2",
        ],
    );
    assert_eq!(
        blocked["outcome"], "RESOLUTION_OUTCOME_BLOCKED",
        "{blocked}"
    );
    assert_eq!(
        blocked["blocked_links"].as_array().map(Vec::len),
        Some(1),
        "{blocked}"
    );
    assert_eq!(blocked["suppressed"], false);
    assert!(blocked["ignored_identifiers"].is_array());
    let order = run(
        &server,
        &[
            "track",
            "--id",
            "email:ann@example.com",
            "--event",
            "Order Completed",
            "--prop",
            "revenue=20",
            "--timestamp",
            "2024-05-02T09:30:00Z",
        ],
    );
    assert_eq!(order["outcome"], "RESOLUTION_OUTCOME_ATTACHED");
    let profile = run(&server, &["profile", "--id", "email:ann@example.com"]);
    assert_eq!(profile["events"][0]["timestamp"], "2024-05-02T09:30:00Z");
    assert!(
        profile["journal"].as_array().is_some_and(|j| !j.is_empty()),
        "{profile}"
    );
    assert!(profile["consent_history"].is_array());
    let printed = refused(
        &server,
        &[
            "identify",
            "--id",
            "email:ann@example.com",
            "--timestamp",
            "yesterday",
        ],
    );
    assert!(printed.contains("RFC 3339"), "{printed}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_are_defined_inspected_watched_and_deleted_from_the_command_line() {
    let server = TestServer::start().await;
    let _ = server.client().await;
    run(
        &server,
        &[
            "identify",
            "--id",
            "email:ann@example.com",
            "--trait",
            "plan=gold",
        ],
    );
    run(
        &server,
        &[
            "identify",
            "--id",
            "email:bob@example.com",
            "--trait",
            "plan=free",
        ],
    );
    let rule = r#"profile.traits.plan == "gold""#;
    let preview = run(&server, &["segments", "preview", "--rule", rule]);
    assert_eq!(preview["count"], 1);
    let put = run(
        &server,
        &[
            "segments",
            "put",
            "--segment",
            "gold",
            "--rule",
            rule,
            "--name",
            "Gold",
        ],
    );
    assert_eq!(put["created"], true);
    let mut ready = false;
    for _ in 0..300 {
        if run(&server, &["segments", "get", "--segment", "gold"])["ready"] == true {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(ready, "the segment is computed");
    let listed = run(&server, &["segments", "list"]);
    assert_eq!(listed["segments"][0]["id"], "gold");
    let members = run(&server, &["segments", "members", "--segment", "gold"]);
    assert_eq!(members["members"].as_array().map(Vec::len), Some(1));
    let check = run(
        &server,
        &["segments", "check", "--id", "email:ann@example.com"],
    );
    assert_eq!(check["memberships"][0]["segment_id"], "gold");

    // A watcher sees Bob enter once he upgrades.
    let watcher = sightline(
        &server,
        &["segments", "watch", "--segment", "gold", "--count", "1"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("watch");
    let mut client = server.client().await;
    let mut seen = String::new();
    let waited = tokio::task::spawn_blocking(move || watcher.wait_with_output());
    for _ in 0..100 {
        // The watch may not be open yet: upgrade until it has seen it.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut upgrade = identify(vec![email("bob@example.com")]);
        upgrade.traits = traits(&[("plan", text("gold"))]);
        client.identify(upgrade).await.unwrap();
        let mut downgrade = identify(vec![email("bob@example.com")]);
        downgrade.traits = traits(&[("plan", text("free"))]);
        client.identify(downgrade).await.unwrap();
        if waited.is_finished() {
            break;
        }
    }
    let output = waited.await.expect("joined").expect("watch ends");
    seen.push_str(&String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let change: Value = serde_json::from_str(seen.trim()).expect("one JSON line");
    assert_eq!(change["segment_id"], "gold");

    run(&server, &["segments", "delete", "--segment", "gold"]);
    let printed = refused(&server, &["segments", "get", "--segment", "gold"]);
    assert!(printed.contains("NOT_FOUND"), "{printed}");
    let printed = refused(
        &server,
        &["segments", "preview", "--rule", "profile.computed.monetary"],
    );
    assert!(printed.contains("INVALID_ARGUMENT"), "{printed}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_unmerge_maintenance_privacy_requests_and_profiles_from_the_command_line() {
    let server = TestServer::start().await;
    let _ = server.client().await;
    run(&server, &["identify", "--id", "email:ann@example.com"]);
    run(
        &server,
        &[
            "identify",
            "--id",
            "email:ann@example.com",
            "--id",
            "phone:+447911123456",
        ],
    );
    for _ in 0..2 {
        let consent = run(
            &server,
            &[
                "consent",
                "--id",
                "email:ann@example.com",
                "--grant",
                "email:marketing",
                "--withdraw",
                "sms:marketing",
                "--message-id",
                "pref-1",
            ],
        );
        assert_eq!(consent["profile_id"], "p1");
    }
    let profile = run(&server, &["profile", "--profile-id", "p1"]);
    assert_eq!(
        profile["consent_history"].as_array().map(Vec::len),
        Some(2),
        "{profile}"
    );

    let split = run(
        &server,
        &[
            "unmerge",
            "--id",
            "email:ann@example.com",
            "--split",
            "phone:+447911123456",
            "--reason",
            "shared phone",
        ],
    );
    assert_eq!(split["profile_id"], "p1");
    assert!(
        split["new_profile_id"]
            .as_str()
            .is_some_and(|id| id != "p1"),
        "{split}"
    );
    let counted = run(&server, &["profiles", "count"]);
    assert_eq!(counted["profiles"], 2);
    let listed = run(&server, &["profiles", "list", "--limit", "1"]);
    assert_eq!(listed["profile_ids"], serde_json::json!(["p1"]));
    let next = listed["next_page_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let rest = run(
        &server,
        &["profiles", "list", "--limit", "1", "--page-token", &next],
    );
    assert_eq!(rest["profile_ids"].as_array().map(Vec::len), Some(1));

    let maintenance = run(&server, &["maintenance"]);
    assert!(maintenance["customers"].is_u64(), "{maintenance}");
    let erased = run(
        &server,
        &[
            "erase",
            "--id",
            "email:ann@example.com",
            "--reason",
            "Art. 17 request",
            "--request-id",
            "r-1",
        ],
    );
    assert!(erased.is_object());
    let requests = run(&server, &["privacy-requests"]);
    assert_eq!(requests["requests"][0]["request_id"], "r-1", "{requests}");
    let matching = run(&server, &["matching", "run"]);
    assert!(matching["profiles_checked"].is_u64(), "{matching}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn match_candidates_are_listed_accepted_and_rejected_from_the_command_line() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let twins = crate::match_model::twins_for_review(&server, &mut client).await;
    let listed = run(&server, &["candidates", "list"]);
    let ids: Vec<&str> = listed["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .filter_map(|candidate| candidate["candidate_id"].as_str())
        .collect();
    assert!(ids.contains(&twins.as_str()), "{listed}");
    let rejected = run(
        &server,
        &[
            "candidates",
            "reject",
            "--candidate",
            &twins,
            "--reviewer",
            "qa",
        ],
    );
    assert_eq!(rejected["decision"], "REVIEW_DECISION_REJECT");
    let printed = refused(
        &server,
        &["candidates", "accept", "--candidate", "nonsense"],
    );
    assert!(printed.contains("INVALID_ARGUMENT"), "{printed}");
    if let Some(other) = ids.iter().find(|id| **id != twins) {
        let accepted = run(&server, &["candidates", "accept", "--candidate", other]);
        assert_eq!(accepted["decision"], "REVIEW_DECISION_ACCEPT");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn products_recommendations_and_computed_traits_from_the_command_line() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let catalogue = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        catalogue.path(),
        r#"[{"product_id": "A", "name": "Tent", "category": "camping", "price": 120.0},
            {"product_id": "B", "name": "Stove", "category": "camping"}]"#,
    )
    .unwrap();
    let put = run(
        &server,
        &["products", "put", catalogue.path().to_str().unwrap()],
    );
    assert_eq!(put["created"], 2);

    let defined = run(
        &server,
        &[
            "traits",
            "put",
            "--name",
            "orders_30d",
            "--event",
            "Order Completed",
            "--aggregation",
            "count",
            "--window-days",
            "30",
        ],
    );
    assert_eq!(defined["computed_trait"]["name"], "orders_30d");
    let listed = run(&server, &["traits", "list"]);
    assert_eq!(listed["computed_traits"][0]["aggregation"], "count");
    let refused = refused(
        &server,
        &[
            "traits",
            "put",
            "--name",
            "x",
            "--event",
            "E",
            "--aggregation",
            "median",
        ],
    );
    assert!(refused.contains("computed_trait.aggregation"), "{refused}");

    for who in ["one@example.com", "two@example.com"] {
        let mut order = track(vec![email(who)], "Order Completed");
        order.properties = traits(&[(
            "products",
            prost_types::Value {
                kind: Some(prost_types::value::Kind::ListValue(
                    prost_types::ListValue {
                        values: ["A", "B"]
                            .iter()
                            .map(|id| prost_types::Value {
                                kind: Some(prost_types::value::Kind::StructValue(
                                    traits(&[("product_id", text(id))]).unwrap(),
                                )),
                            })
                            .collect(),
                    },
                )),
            },
        )]);
        client.track(order).await.unwrap();
    }
    let related = run(&server, &["products", "related", "--product", "A"]);
    assert_eq!(related["products"][0]["product"]["product_id"], "B");
    assert_eq!(
        related["products"][0]["explanation"],
        "bought together with Tent"
    );
    let recommended = run(&server, &["recommend", "--id", "email:one@example.com"]);
    assert_eq!(recommended["personalised"], false);
    assert_eq!(
        recommended["not_personalised_reason"],
        "no personalisation consent"
    );
    run(&server, &["traits", "delete", "--name", "orders_30d"]);
    server.stop().await;
}
