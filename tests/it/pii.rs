//! No personal data in errors or logs: calls carrying distinctive values of
//! every identifier kind and trait are refused or not found, and neither
//! the answers (messages and details) nor the server's log lines at debug
//! level quote any of them.

use std::process::{Command, Stdio};

use sightline::api::pb;

use crate::support::*;

/// Distinctive text, so that a leak cannot hide in ordinary words.
const MARK: &str = "qz7leak";

fn marked(prefix: &str) -> String {
    format!("{prefix}{MARK}")
}

fn assert_clean(what: &str, status: &tonic::Status) {
    assert!(
        !status.message().contains(MARK),
        "{what}: the message quotes the data: {}",
        status.message()
    );
    let details = String::from_utf8_lossy(status.details());
    assert!(
        !details.contains(MARK),
        "{what}: the details quote the data"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_logs_never_quote_identifiers_or_traits() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data_dir.path())
        .env("SIGHTLINE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    // Read as it is written: a full pipe would stall the server.
    let stderr = child.stderr.take().expect("stderr");
    let logs = std::thread::spawn(move || {
        let mut logs = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut logs);
        logs
    });
    let mut client = connect_port(port).await;

    let long = marked(&"x".repeat(300));
    let bad_identifiers = [
        ("email", marked("not-an-email-")),
        ("phone", marked("+44 not a phone ")),
        ("device_id", long.clone()),
        ("user_id", long.clone()),
        ("anonymous_id", long.clone()),
    ];
    for (kind, value) in &bad_identifiers {
        let status = client
            .identify(identify(vec![id(kind, value)]))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{kind}");
        assert_clean(kind, &status);
    }
    let mut huge_trait = identify(vec![email("ok@example.com")]);
    huge_trait.traits = traits(&[("first_name", text(&marked(&"n".repeat(70_000))))]);
    let status = client.identify(huge_trait).await.expect_err("too large");
    assert_clean("a trait too large", &status);
    let mut bad_name = identify(vec![email("ok@example.com")]);
    bad_name.traits = traits(&[(&marked(&"t".repeat(200)), text("x"))]);
    let status = client.identify(bad_name).await.expect_err("name too long");
    assert_clean("a trait name too long", &status);
    let mut order = track(vec![email("ok@example.com")], "Order Completed");
    order.properties = traits(&[("revenue", text(&marked("lots ")))]);
    let status = client.track(order).await.expect_err("revenue is a number");
    assert_clean("a property of the wrong type", &status);

    let unknown = marked("nobody.") + "@example.com";
    let status = get_by(&mut client, email(&unknown))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_clean("an unknown person", &status);
    let status = client
        .update_consent(pb::UpdateConsentRequest {
            lookup: Some(pb::update_consent_request::Lookup::Identifier(email(
                &unknown,
            ))),
            changes: vec![pb::ConsentChange {
                channel: "email".to_owned(),
                purpose: "marketing".to_owned(),
                state: pb::ConsentState::Granted as i32,
            }],
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    assert_clean("consent for an unknown person", &status);
    let mut privacy = pb::privacy_service_client::PrivacyServiceClient::connect(format!(
        "http://127.0.0.1:{port}"
    ))
    .await
    .unwrap();
    let status = privacy
        .erase_subject(pb::EraseSubjectRequest {
            lookup: Some(pb::erase_subject_request::Lookup::Identifier(email(
                &unknown,
            ))),
            reason: "Art. 17 request".to_owned(),
            ..Default::default()
        })
        .await;
    if let Err(status) = status {
        assert_clean("erasing an unknown person", &status);
    }

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        logs.join().expect("log reader")
    })
    .await
    .unwrap();
    assert!(
        output.contains("stopped"),
        "the whole log was read: {output}"
    );
    let leaking = output.lines().find(|line| line.contains(MARK));
    assert!(leaking.is_none(), "a log line quotes the data: {leaking:?}");
}
