//! Case and format variants of one identifier are one identifier.

use sightline::api::pb::ResolutionOutcome;

use crate::support::*;

#[tokio::test]
async fn case_and_format_variants_resolve_to_the_same_profile() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let created = client
        .identify(identify(vec![
            email("Jane@Example.COM "),
            phone("+44 20 7946 0958"),
        ]))
        .await
        .unwrap()
        .into_inner();

    for variant in [
        email("jane@example.com"),
        email(" JANE@EXAMPLE.com"),
        phone("020 7946 0958"),
        phone("(020) 7946-0958"),
    ] {
        let response = client
            .identify(identify(vec![variant]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.outcome(), ResolutionOutcome::Attached);
        assert_eq!(response.profile_id, created.profile_id);
    }
    let profile = get_by(&mut client, phone("02079460958")).await.unwrap();
    assert_eq!(profile.profile_id, created.profile_id);
    assert_eq!(
        identifier_values(&profile),
        vec!["email:jane@example.com", "phone:+442079460958"],
        "stored in normalized form"
    );
}

#[tokio::test]
async fn the_default_phone_region_comes_from_configuration() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.identity.default_region = "US".to_owned();
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    client
        .identify(identify(vec![phone("(650) 253-0000")]))
        .await
        .unwrap();
    let profile = get_by(&mut client, phone("+1 650 253 0000")).await.unwrap();
    assert_eq!(identifier_values(&profile), vec!["phone:+16502530000"]);
}

#[tokio::test]
async fn gmail_aliases_fold_when_configured() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.identity.fold_email_aliases = true;
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    let first = client
        .identify(identify(vec![email("Jane.Doe+shop@gmail.com")]))
        .await
        .unwrap();
    let second = client
        .identify(identify(vec![email("janedoe@googlemail.com")]))
        .await
        .unwrap();
    assert_eq!(
        first.into_inner().profile_id,
        second.into_inner().profile_id
    );
}
