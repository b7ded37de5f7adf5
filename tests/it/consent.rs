//! Consent per channel and purpose, with history; merges never widen it.

use sightline::api::pb::{self, ConsentState};
use tonic::Code;

use crate::support::*;

fn change(channel: &str, purpose: &str, state: ConsentState) -> pb::ConsentChange {
    pb::ConsentChange {
        channel: channel.to_owned(),
        purpose: purpose.to_owned(),
        state: state as i32,
    }
}

fn update(
    who: pb::Identifier,
    changes: Vec<pb::ConsentChange>,
    seconds: i64,
) -> pb::UpdateConsentRequest {
    pb::UpdateConsentRequest {
        lookup: Some(pb::update_consent_request::Lookup::Identifier(who)),
        changes,
        timestamp: at_seconds(seconds),
        message_id: String::new(),
        source: "preference-centre".to_owned(),
    }
}

fn state_of(profile: &pb::Profile, channel: &str, purpose: &str) -> Option<ConsentState> {
    profile
        .consents
        .iter()
        .find(|consent| consent.channel == channel && consent.purpose == purpose)
        .map(|consent| consent.state())
}

#[tokio::test]
async fn decisions_are_kept_with_history_and_late_ones_do_not_override() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let who = email("consent@example.com");
    client.identify(identify(vec![who.clone()])).await.unwrap();
    client
        .update_consent(update(
            who.clone(),
            vec![
                change("email", "marketing", ConsentState::Granted),
                change("sms", "marketing", ConsentState::Granted),
            ],
            1_000,
        ))
        .await
        .unwrap();
    client
        .update_consent(update(
            who.clone(),
            vec![change("email", "marketing", ConsentState::Withdrawn)],
            2_000,
        ))
        .await
        .unwrap();
    // A grant captured earlier but delivered late changes nothing.
    client
        .update_consent(update(
            who.clone(),
            vec![change("email", "marketing", ConsentState::Granted)],
            1_500,
        ))
        .await
        .unwrap();
    let profile = get_by(&mut client, who).await.unwrap();
    assert_eq!(
        state_of(&profile, "email", "marketing"),
        Some(ConsentState::Withdrawn)
    );
    assert_eq!(
        state_of(&profile, "sms", "marketing"),
        Some(ConsentState::Granted)
    );
    assert_eq!(profile.consent_history.len(), 4);
    let source = &profile.consents[0].provenance.as_ref().unwrap().source;
    assert_eq!(source, "preference-centre");
}

#[tokio::test]
async fn a_withdrawal_on_either_side_of_a_merge_stands() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (first, second) = (email("c1@example.com"), phone("+447911123987"));
    client
        .identify(identify(vec![first.clone()]))
        .await
        .unwrap();
    client
        .identify(identify(vec![second.clone()]))
        .await
        .unwrap();
    client
        .update_consent(update(
            first.clone(),
            vec![change("email", "marketing", ConsentState::Withdrawn)],
            1_000,
        ))
        .await
        .unwrap();
    client
        .update_consent(update(
            second.clone(),
            vec![
                change("email", "marketing", ConsentState::Granted),
                change("push", "analytics", ConsentState::Granted),
            ],
            5_000,
        ))
        .await
        .unwrap();
    client
        .identify(identify(vec![first.clone(), second]))
        .await
        .unwrap();
    let profile = get_by(&mut client, first).await.unwrap();
    assert_eq!(
        state_of(&profile, "email", "marketing"),
        Some(ConsentState::Withdrawn)
    );
    assert_eq!(
        state_of(&profile, "push", "analytics"),
        Some(ConsentState::Granted)
    );
    assert_eq!(profile.consent_history.len(), 3);
}

#[tokio::test]
async fn unknown_channels_purposes_and_profiles_are_rejected() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let who = email("strict@example.com");
    client.identify(identify(vec![who.clone()])).await.unwrap();
    let cases = [
        (
            change("fax", "marketing", ConsentState::Granted),
            "changes[0].channel",
        ),
        (
            change("email", "selling", ConsentState::Granted),
            "changes[0].purpose",
        ),
        (
            change("email", "marketing", ConsentState::Unspecified),
            "changes[0].state",
        ),
    ];
    for (bad, field) in cases {
        let status = client
            .update_consent(update(who.clone(), vec![bad], 1))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let empty = client
        .update_consent(update(who.clone(), vec![], 1))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(
        get_by(&mut client, who)
            .await
            .unwrap()
            .consent_history
            .is_empty()
    );
    let unknown = client
        .update_consent(update(
            email("nobody@example.com"),
            vec![change("email", "marketing", ConsentState::Granted)],
            1,
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

#[tokio::test]
async fn a_decision_dated_in_the_future_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let who = email("future@example.com");
    client.identify(identify(vec![who.clone()])).await.unwrap();
    let next_year = now_seconds() + 365 * 86_400;
    let refused = client
        .update_consent(update(
            who.clone(),
            vec![change("email", "marketing", ConsentState::Granted)],
            next_year,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("timestamp"),
        "{}",
        refused.message()
    );
    let mut future_event = track(vec![who.clone()], "Signed Up");
    future_event.timestamp = at_seconds(253_402_300_000);
    let refused = client.track(future_event).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let profile = get_by(&mut client, who).await.unwrap();
    assert!(profile.consents.is_empty());
    assert!(profile.consent_history.is_empty());
    assert!(profile.events.is_empty());
}

#[tokio::test]
async fn a_withdrawal_takes_effect_even_when_a_grant_carries_a_later_time() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let who = email("skewed@example.com");
    client.identify(identify(vec![who.clone()])).await.unwrap();
    // A client whose clock runs a minute fast, within the allowed skew.
    client
        .update_consent(update(
            who.clone(),
            vec![change("email", "marketing", ConsentState::Granted)],
            now_seconds() + 60,
        ))
        .await
        .unwrap();
    client
        .update_consent(update(
            who.clone(),
            vec![change("email", "marketing", ConsentState::Withdrawn)],
            now_seconds(),
        ))
        .await
        .unwrap();
    let profile = get_by(&mut client, who).await.unwrap();
    assert_eq!(
        state_of(&profile, "email", "marketing"),
        Some(ConsentState::Withdrawn)
    );
}

#[tokio::test]
async fn a_decision_resent_with_the_same_message_id_is_recorded_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let who = email("resent@example.com");
    client.identify(identify(vec![who.clone()])).await.unwrap();
    let mut grant = update(
        who.clone(),
        vec![change("email", "marketing", ConsentState::Granted)],
        1_000,
    );
    grant.message_id = "consent-1".to_owned();
    let first = client.update_consent(grant.clone()).await.unwrap();
    let again = client.update_consent(grant).await.unwrap();
    assert_eq!(first.into_inner(), again.into_inner());
    let profile = get_by(&mut client, who.clone()).await.unwrap();
    assert_eq!(
        profile.consent_history.len(),
        1,
        "{:?}",
        profile.consent_history
    );
    // Another message id is another decision.
    let mut withdrawal = update(
        who.clone(),
        vec![change("email", "marketing", ConsentState::Withdrawn)],
        2_000,
    );
    withdrawal.message_id = "consent-2".to_owned();
    client.update_consent(withdrawal).await.unwrap();
    let profile = get_by(&mut client, who).await.unwrap();
    assert_eq!(profile.consent_history.len(), 2);
    assert_eq!(
        state_of(&profile, "email", "marketing"),
        Some(ConsentState::Withdrawn)
    );
}
