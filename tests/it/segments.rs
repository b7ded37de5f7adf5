//! Segments through the API: rules checked at definition time, memberships
//! kept up to date in the same write, sweeps for time, holdouts, listing and
//! watching.

use std::sync::Arc;
use std::time::Duration;

use sightline::api::pb::{
    self, check_membership_request, segment_service_client::SegmentServiceClient,
};
use sightline::model::{ManualClock, UnixMillis};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

type Segments = SegmentServiceClient<Channel>;

const DAY_SECONDS: i64 = 86_400;
/// 2026-01-01T00:00:00Z.
const START_SECONDS: i64 = 1_767_225_600;

fn at_day(day: i64) -> Option<prost_types::Timestamp> {
    at_seconds(START_SECONDS + day * DAY_SECONDS + 3_600)
}

async fn segments_client(server: &TestServer) -> Segments {
    SegmentServiceClient::new(server.channel().await)
}

fn segment(id: &str, rule: &str, holdout_percent: f64) -> pb::PutSegmentRequest {
    pb::PutSegmentRequest {
        segment: Some(pb::Segment {
            id: id.to_owned(),
            name: id.to_owned(),
            rule: rule.to_owned(),
            holdout_percent,
            ..Default::default()
        }),
    }
}

/// Defines a segment and waits until its members are computed over the
/// profiles that already exist.
async fn define(segments: &mut Segments, id: &str, rule: &str, holdout_percent: f64) {
    segments
        .put_segment(segment(id, rule, holdout_percent))
        .await
        .expect("put segment");
    wait_ready(segments, id).await;
}

async fn wait_ready(segments: &mut Segments, id: &str) {
    // A hang guard only: backfills of a few thousand profiles take moments.
    for _ in 0..3000 {
        let current = segments
            .get_segment(pb::GetSegmentRequest { id: id.to_owned() })
            .await
            .expect("get segment")
            .into_inner()
            .segment
            .expect("segment");
        if current.ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("segment {id} never became ready");
}

fn in_segment(id: &str) -> Vec<(String, bool)> {
    vec![(id.to_owned(), false)]
}

async fn next_change(stream: &mut tonic::Streaming<pb::MembershipChange>) -> pb::MembershipChange {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a change arrives")
        .expect("stream healthy")
        .expect("stream open")
}

fn order(who: pb::Identifier, revenue: f64, day: i64) -> pb::TrackRequest {
    let mut request = track(vec![who], "Order Completed");
    request.properties = traits(&[("revenue", number(revenue))]);
    request.timestamp = at_day(day);
    request
}

#[tokio::test]
async fn a_vip_enters_lapsing_as_time_passes_and_leaves_with_a_new_order() {
    let clock = Arc::new(ManualClock::new(UnixMillis(
        (START_SECONDS + 10 * DAY_SECONDS) * 1000,
    )));
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    // Orders are stamped an hour into their day; the clock shows its start.
    config.limits.future_skew_secs = DAY_SECONDS as u64;
    let server = TestServer::start_with_clock(data_dir, config, clock.clone()).await;
    let mut client = server.client().await;
    let mut segments = segments_client(&server).await;
    let vip = email("vip@example.com");
    client.track(order(vip.clone(), 400.0, 1)).await.unwrap();
    client.track(order(vip.clone(), 300.0, 2)).await.unwrap();
    define(
        &mut segments,
        "lapsing-vip",
        r#"profile.computed.lifecycle_stage == "lapsing" && profile.computed.monetary >= 500.0"#,
        0.0,
    )
    .await;
    assert!(memberships(&mut segments, vip.clone()).await.is_empty());

    let mut watch = segments
        .watch_membership(pb::WatchMembershipRequest {
            segment_ids: vec!["lapsing-vip".to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    clock.advance_days(100);
    let swept = client
        .run_maintenance(pb::RunMaintenanceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(swept.segment_profiles_evaluated >= 1);
    let entered = next_change(&mut watch).await;
    assert_eq!(entered.segment_id, "lapsing-vip");
    assert_eq!(entered.kind, pb::membership_change::Kind::Entered as i32);
    let profile_id = get_by(&mut client, vip.clone()).await.unwrap().profile_id;
    assert_eq!(entered.profile_id, profile_id);
    assert_eq!(
        memberships(&mut segments, vip.clone()).await,
        in_segment("lapsing-vip")
    );

    client.track(order(vip.clone(), 50.0, 110)).await.unwrap();
    // Already true right after the acknowledgement, no sweep needed.
    assert!(memberships(&mut segments, vip.clone()).await.is_empty());
    let exited = next_change(&mut watch).await;
    assert_eq!(exited.kind, pb::membership_change::Kind::Exited as i32);
    assert_eq!(exited.profile_id, profile_id);
}

async fn consent(client: &mut Client, who: pb::Identifier, granted: bool) {
    client
        .update_consent(pb::UpdateConsentRequest {
            lookup: Some(pb::update_consent_request::Lookup::Identifier(who)),
            changes: vec![pb::ConsentChange {
                channel: "email".to_owned(),
                purpose: "marketing".to_owned(),
                state: if granted {
                    pb::ConsentState::Granted
                } else {
                    pb::ConsentState::Withdrawn
                } as i32,
            }],
            ..Default::default()
        })
        .await
        .expect("update consent");
}

#[tokio::test]
async fn withdrawing_consent_leaves_a_segment_that_requires_it_at_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut segments = segments_client(&server).await;
    define(
        &mut segments,
        "emailable",
        r#""email" in profile.consent.marketing && "email" in profile.identifiers"#,
        0.0,
    )
    .await;
    let who = email("reader@example.com");
    client.identify(identify(vec![who.clone()])).await.unwrap();
    assert!(memberships(&mut segments, who.clone()).await.is_empty());
    consent(&mut client, who.clone(), true).await;
    assert_eq!(
        memberships(&mut segments, who.clone()).await,
        in_segment("emailable")
    );
    consent(&mut client, who.clone(), false).await;
    assert!(memberships(&mut segments, who.clone()).await.is_empty());
    assert!(members(&mut segments, "emailable", true).await.is_empty());
}

#[tokio::test]
async fn a_merge_keeps_exactly_the_memberships_the_merged_profile_satisfies() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut segments = segments_client(&server).await;
    define(
        &mut segments,
        "gold",
        r#"profile.traits.plan == "gold""#,
        0.0,
    )
    .await;
    define(
        &mut segments,
        "londoners",
        r#"profile.traits.city == "London""#,
        0.0,
    )
    .await;
    define(&mut segments, "no-city", "!has(profile.traits.city)", 0.0).await;

    let mut first = identify(vec![email("merge@example.com")]);
    first.traits = traits(&[("plan", text("gold"))]);
    let first_id = client
        .identify(first)
        .await
        .unwrap()
        .into_inner()
        .profile_id;
    let mut second = identify(vec![phone("+447911123456")]);
    second.traits = traits(&[("city", text("London"))]);
    let second_id = client
        .identify(second)
        .await
        .unwrap()
        .into_inner()
        .profile_id;
    assert_eq!(
        memberships(&mut segments, email("merge@example.com")).await,
        vec![("gold".to_owned(), false), ("no-city".to_owned(), false)]
    );
    assert_eq!(
        memberships(&mut segments, phone("+447911123456")).await,
        in_segment("londoners")
    );

    let merged = client
        .identify(identify(vec![
            email("merge@example.com"),
            phone("+447911123456"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.outcome, pb::ResolutionOutcome::Merged as i32);
    let survivor = merged.profile_id;
    let absorbed = if survivor == first_id {
        second_id
    } else {
        first_id
    };
    assert_eq!(
        memberships(&mut segments, phone("+447911123456")).await,
        vec![("gold".to_owned(), false), ("londoners".to_owned(), false)]
    );
    for id in ["gold", "londoners", "no-city"] {
        let listed = members(&mut segments, id, true).await;
        assert!(
            listed.iter().all(|(profile, _)| *profile != absorbed),
            "{id}: {listed:?}"
        );
    }
    assert_eq!(
        members(&mut segments, "gold", false).await,
        vec![(survivor.clone(), false)]
    );
    assert!(members(&mut segments, "no-city", true).await.is_empty());
}

async fn ingest_profiles(client: &mut Client, count: usize) {
    let items: Vec<pb::IngestRequest> = (0..count)
        .map(|n| {
            let mut request = identify(vec![user(&format!("member-{n}"))]);
            request.traits = traits(&[("tier", text("regular"))]);
            pb::IngestRequest {
                item: Some(pb::ingest_request::Item::Identify(request)),
            }
        })
        .collect();
    let summary = client
        .ingest(futures::stream::iter(items))
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!(summary.accepted as usize, count);
}

#[tokio::test]
async fn a_tenth_is_held_out_stably_across_restarts() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    ingest_profiles(&mut client, 10_000).await;
    let mut segments = segments_client(&server).await;
    define(
        &mut segments,
        "regulars",
        r#"profile.traits.tier == "regular""#,
        10.0,
    )
    .await;
    let summary = segments
        .get_segment(pb::GetSegmentRequest {
            id: "regulars".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(summary.member_count + summary.holdout_count, 10_000);
    assert!(
        (800..=1200).contains(&summary.holdout_count),
        "holdout {}",
        summary.holdout_count
    );
    let visible = members(&mut segments, "regulars", false).await;
    assert_eq!(visible.len() as u64, summary.member_count);
    assert!(visible.iter().all(|(_, holdout)| !holdout));
    let everyone = members(&mut segments, "regulars", true).await;
    let held_out: Vec<String> = everyone
        .iter()
        .filter(|(_, holdout)| *holdout)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(held_out.len() as u64, summary.holdout_count);

    let data_dir = server.stop().await;
    let server = TestServer::start_in(data_dir).await;
    let mut segments = segments_client(&server).await;
    let again: Vec<String> = members(&mut segments, "regulars", true)
        .await
        .into_iter()
        .filter(|(_, holdout)| *holdout)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(again, held_out);
}

#[tokio::test]
async fn invalid_rules_are_rejected_with_their_position_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut segments = segments_client(&server).await;
    let cases = [
        ("profile.traits.plan == ", "line 1"),
        (
            "frobnicate(profile.traits.plan)",
            "unknown function `frobnicate`",
        ),
        (
            "customer.traits.plan == \"gold\"",
            "unknown variable `customer`",
        ),
        (
            "profile.computed.lifetime_valu > 10.0",
            "unknown computed trait `lifetime_valu`",
        ),
        ("profile.computed.lifecycle_stage == 3", "type mismatch"),
        (
            "profile.trait.plan == \"gold\"",
            "`profile` has no field `trait`",
        ),
        (
            "events_in(\"Product Viewed\", duration(\"seven days\")) > 1",
            "not a window",
        ),
    ];
    for (rule, expected) in cases {
        let status = segments
            .put_segment(segment("broken", rule, 0.0))
            .await
            .expect_err(rule);
        assert_eq!(status.code(), Code::InvalidArgument, "{rule}");
        assert!(
            status.message().contains("segment.rule"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains(expected),
            "{rule}: {}",
            status.message()
        );
        assert!(
            status.message().contains("column"),
            "{rule}: {}",
            status.message()
        );
    }
    let status = segments
        .put_segment(segment("broken", "frobnicate(1)", 0.0))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("line 1, column 1"),
        "{}",
        status.message()
    );
    let listed = segments
        .list_segments(pb::ListSegmentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.segments.is_empty());
    let status = segments
        .get_segment(pb::GetSegmentRequest {
            id: "broken".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn windowed_event_counts_distances_and_deletion() {
    let clock = Arc::new(ManualClock::new(UnixMillis(
        (START_SECONDS + 20 * DAY_SECONDS) * 1000,
    )));
    let data_dir = tempfile::tempdir().unwrap();
    let config = test_config(&data_dir);
    let server = TestServer::start_with_clock(data_dir, config, clock.clone()).await;
    let mut client = server.client().await;
    let mut segments = segments_client(&server).await;
    define(
        &mut segments,
        "browsers",
        r#"events_in("Product Viewed", duration("7d")) >= 2"#,
        0.0,
    )
    .await;
    define(
        &mut segments,
        "near-london",
        "geo_distance_km(profile.traits.location.lat, profile.traits.location.lon, 51.5072, -0.1276) < 25.0",
        0.0,
    )
    .await;
    let who = email("browser@example.com");
    for day in [5, 18, 19] {
        let mut view = track(vec![who.clone()], "Product Viewed");
        view.timestamp = at_day(day);
        client.track(view).await.unwrap();
    }
    assert_eq!(
        memberships(&mut segments, who.clone()).await,
        in_segment("browsers")
    );
    // Day 26: the view of day 18 is more than seven days old.
    clock.advance_days(6);
    client
        .run_maintenance(pb::RunMaintenanceRequest {})
        .await
        .unwrap();
    assert!(memberships(&mut segments, who.clone()).await.is_empty());

    let mut located = identify(vec![who.clone()]);
    let location = prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
            fields: [("lat", 51.45), ("lon", -0.97)]
                .into_iter()
                .map(|(name, value)| (name.to_owned(), number(value)))
                .collect(),
        })),
    };
    located.traits = traits(&[("location", location.clone())]);
    client.identify(located).await.unwrap();
    // Reading is ~60 km from London.
    assert!(memberships(&mut segments, who.clone()).await.is_empty());
    let mut moved = identify(vec![who.clone()]);
    moved.traits = traits(&[(
        "location",
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                fields: [("lat", 51.46), ("lon", -0.30)]
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), number(value)))
                    .collect(),
            })),
        },
    )]);
    client.identify(moved).await.unwrap();
    assert_eq!(
        memberships(&mut segments, who.clone()).await,
        in_segment("near-london")
    );

    segments
        .delete_segment(pb::DeleteSegmentRequest {
            id: "near-london".to_owned(),
        })
        .await
        .unwrap();
    assert!(memberships(&mut segments, who.clone()).await.is_empty());
    let status = segments
        .list_members(pb::ListMembersRequest {
            segment_id: "near-london".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_new_segment_is_computed_over_existing_profiles() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for n in 0..50 {
        let mut request = identify(vec![email(&format!("existing{n}@example.com"))]);
        request.traits = traits(&[("age", number(f64::from(20 + n)))]);
        client.identify(request).await.unwrap();
    }
    let mut segments = segments_client(&server).await;
    define(&mut segments, "over-sixty", "profile.traits.age >= 60", 0.0).await;
    assert_eq!(members(&mut segments, "over-sixty", false).await.len(), 10);
    // Replacing the rule recomputes the members.
    define(&mut segments, "over-sixty", "profile.traits.age >= 65", 0.0).await;
    assert_eq!(members(&mut segments, "over-sixty", false).await.len(), 5);
    let status = segments
        .check_membership(pb::CheckMembershipRequest {
            lookup: Some(check_membership_request::Lookup::Identifier(email(
                "nobody@example.com",
            ))),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn an_open_watch_does_not_hold_up_a_graceful_stop() {
    let server = TestServer::start().await;
    let mut segments = segments_client(&server).await;
    define(&mut segments, "everyone", "true", 0.0).await;
    let mut watch = segments
        .watch_membership(pb::WatchMembershipRequest::default())
        .await
        .unwrap()
        .into_inner();
    // A hang guard only: stopping takes moments.
    tokio::time::timeout(Duration::from_secs(60), server.stop())
        .await
        .expect("the server stops while a watch is open");
    let ended = tokio::time::timeout(Duration::from_secs(60), watch.message())
        .await
        .expect("the watch ends");
    match ended {
        Ok(None) => {}
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Some(change)) => panic!("unexpected change {change:?}"),
    }
}
