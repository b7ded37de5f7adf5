//! Bad input gets INVALID_ARGUMENT naming the field, and stores nothing.

use sightline::api::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::*;

/// Asserts the status is INVALID_ARGUMENT about `field`, both in the
/// message and in the structured BadRequest details.
fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "{}",
        status.message()
    );
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("bad request details")
        .field_violations;
    assert_eq!(violations[0].field, field);
}

#[tokio::test]
async fn malformed_identify_calls_are_rejected_and_store_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let good = email("kept-out@example.com");
    let cases: Vec<(pb::IdentifyRequest, &str)> = vec![
        (
            identify(vec![good.clone(), email("not-an-email")]),
            "identifiers[1].value",
        ),
        (
            identify(vec![good.clone(), phone("12345")]),
            "identifiers[1].value",
        ),
        (identify(vec![]), "identifiers"),
        (
            identify(vec![good.clone(), id("fax", "123")]),
            "identifiers[1].kind",
        ),
        (
            identify(vec![good.clone(), user(&"x".repeat(300))]),
            "identifiers[1].value",
        ),
        (
            identify(vec![good.clone(), user("   ")]),
            "identifiers[1].value",
        ),
        (
            pb::IdentifyRequest {
                timestamp: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..identify(vec![good.clone()])
            },
            "timestamp.nanos",
        ),
        (
            pb::IdentifyRequest {
                timestamp: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..identify(vec![good.clone()])
            },
            "timestamp.seconds",
        ),
        (
            pb::IdentifyRequest {
                message_id: "m".repeat(500),
                ..identify(vec![good.clone()])
            },
            "message_id",
        ),
        (
            pb::IdentifyRequest {
                traits: traits(&[("", text("x"))]),
                ..identify(vec![good.clone()])
            },
            "traits",
        ),
    ];
    for (request, field) in cases {
        let status = client.identify(request).await.unwrap_err();
        assert_invalid(&status, field);
        assert!(
            !status.message().contains("not-an-email"),
            "no personal data echoed"
        );
    }
    let lookup = get_by(&mut client, good).await.unwrap_err();
    assert_eq!(
        lookup.code(),
        Code::NotFound,
        "nothing from a rejected call is stored"
    );
}

#[tokio::test]
async fn malformed_track_calls_are_rejected() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let status = client
        .track(track(vec![user("u")], "  "))
        .await
        .unwrap_err();
    assert_invalid(&status, "event");
    let mut nan = track(vec![user("u")], "Order Completed");
    nan.properties = traits(&[("revenue", number(f64::NAN))]);
    assert_invalid(&client.track(nan).await.unwrap_err(), "properties.revenue");
    let status = client
        .track(track(vec![email("a@b")], "x"))
        .await
        .unwrap_err();
    assert_invalid(&status, "identifiers[0].value");
    assert_eq!(
        get_by(&mut client, user("u")).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn unknown_profiles_are_not_found_and_malformed_lookups_invalid() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        get_by_id(&mut client, "p999").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        get_by(&mut client, email("nobody@example.com"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_invalid(
        &get_by_id(&mut client, "42").await.unwrap_err(),
        "profile_id",
    );
    assert_invalid(
        &get_by(&mut client, email("broken")).await.unwrap_err(),
        "identifier.value",
    );
    let status = client
        .get_profile(pb::GetProfileRequest {
            lookup: None,
            events_limit: 0,
        })
        .await
        .unwrap_err();
    assert_invalid(&status, "lookup");
}

#[tokio::test]
async fn traits_nested_past_the_decoders_limit_are_invalid_not_internal() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut value = text("bottom");
    for _ in 0..60 {
        value = prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                fields: [("inner".to_owned(), value)].into_iter().collect(),
            })),
        };
    }
    let mut request = identify(vec![email("deep@example.com")]);
    request.traits = traits(&[("deep", value)]);
    let status = client.identify(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("decoded"), "{}", status.message());
    let missing = get_by(&mut client, email("deep@example.com")).await;
    assert_eq!(
        missing.expect_err("nothing stored").code(),
        tonic::Code::NotFound
    );
}
