//! Computed traits through the API, with a clock the test controls.

use std::sync::Arc;

use sightline::api::pb;
use sightline::model::{ManualClock, UnixMillis};
use tonic::Code;

use crate::support::*;

const DAY_SECONDS: i64 = 86_400;
/// 2026-01-01T00:00:00Z.
const START_SECONDS: i64 = 1_767_225_600;

/// An hour into day `day` of the test calendar.
pub fn at_day(day: i64) -> Option<prost_types::Timestamp> {
    at_seconds(START_SECONDS + day * DAY_SECONDS + 3_600)
}

/// A server whose clock the test sets, at the start of day `clock_day`.
pub async fn start(clock_day: i64) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(UnixMillis(
        (START_SECONDS + clock_day * DAY_SECONDS) * 1000,
    )));
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    // Events are stamped an hour into their day, and the clock is often
    // set to the start of that day.
    config.limits.future_skew_secs = DAY_SECONDS as u64;
    let server = TestServer::start_with_clock(data_dir, config, clock.clone()).await;
    (server, clock)
}

fn order(who: pb::Identifier, revenue: f64, day: i64) -> pb::TrackRequest {
    let mut request = track(vec![who], "Order Completed");
    request.properties = traits(&[("revenue", number(revenue))]);
    request.timestamp = at_day(day);
    request
}

fn event(who: pb::Identifier, name: &str, day: i64) -> pb::TrackRequest {
    let mut request = track(vec![who], name);
    request.timestamp = at_day(day);
    request
}

async fn computed(client: &mut Client, who: pb::Identifier) -> pb::ComputedTraits {
    get_by(client, who)
        .await
        .unwrap()
        .computed
        .expect("computed traits")
}

#[tokio::test]
async fn orders_make_rfm_value_and_a_lifecycle_that_ages_without_new_events() {
    let (server, clock) = start(61).await;
    let mut client = server.client().await;
    let who = email("buyer@example.com");
    for (revenue, day) in [(120.0, 1), (80.0, 30), (100.0, 60)] {
        client
            .track(order(who.clone(), revenue, day))
            .await
            .unwrap();
    }
    let traits = computed(&mut client, who.clone()).await;
    assert_eq!((traits.frequency, traits.monetary), (3, 300.0));
    assert_eq!(traits.average_order_value, Some(100.0));
    assert_eq!(traits.lifetime_value, 300.0);
    assert_eq!(traits.lifecycle_stage, "active");
    assert_eq!(
        traits.recency_days,
        Some(0),
        "23 hours after the last order"
    );
    assert_eq!(traits.conversions_30d, 1);
    assert_eq!(traits.conversions_90d, 3);

    clock.advance_days(200);
    let traits = computed(&mut client, who).await;
    assert_eq!(traits.lifecycle_stage, "inactive");
    assert_eq!(traits.recency_days, Some(200));
    assert_eq!(
        traits.conversions_90d, 0,
        "day-31+ events leave the windows"
    );
    assert_eq!(traits.frequency, 3, "lifetime aggregates stay");
}

#[tokio::test]
async fn engagement_groups_follow_opens_clicks_and_orders() {
    let (server, clock) = start(10).await;
    let mut client = server.client().await;
    let who = email("reader@example.com");
    client
        .track(event(who.clone(), "Email Opened", 8))
        .await
        .unwrap();
    client
        .track(event(who.clone(), "Email Clicked", 9))
        .await
        .unwrap();
    assert_eq!(
        computed(&mut client, who.clone()).await.engagement_group,
        "clicker"
    );
    client.track(order(who.clone(), 25.0, 10)).await.unwrap();
    let traits = computed(&mut client, who.clone()).await;
    assert_eq!(traits.engagement_group, "engaged");
    assert_eq!((traits.email_opens_30d, traits.email_clicks_30d), (1, 1));
    clock.advance_days(95);
    assert_eq!(
        computed(&mut client, who).await.engagement_group,
        "disengaged"
    );
}

#[tokio::test]
async fn merged_profiles_have_the_aggregates_of_one_that_got_every_event() {
    let (server, _clock) = start(100).await;
    let mut client = server.client().await;
    let (first, second, single) = (
        email("m1@example.com"),
        phone("+447911123321"),
        user("all-events"),
    );
    for (who, revenue, day) in [
        (&first, 10.0, 20),
        (&second, 30.0, 50),
        (&first, 5.0, 95),
        (&second, 7.5, 99),
    ] {
        client
            .track(order(who.clone(), revenue, day))
            .await
            .unwrap();
        client
            .track(order(single.clone(), revenue, day))
            .await
            .unwrap();
    }
    client
        .track(event(second.clone(), "Email Clicked", 98))
        .await
        .unwrap();
    client
        .track(event(single.clone(), "Email Clicked", 98))
        .await
        .unwrap();
    client
        .identify(identify(vec![first.clone(), second]))
        .await
        .unwrap();
    assert_eq!(
        computed(&mut client, first).await,
        computed(&mut client, single).await
    );
}

#[tokio::test]
async fn a_late_order_updates_aggregates_without_moving_the_last_order_back() {
    let (server, _clock) = start(100).await;
    let mut client = server.client().await;
    let who = email("late@example.com");
    client.track(order(who.clone(), 50.0, 90)).await.unwrap();
    client.track(order(who.clone(), 20.0, 40)).await.unwrap();
    let traits = computed(&mut client, who).await;
    assert_eq!(traits.frequency, 2);
    assert_eq!(traits.monetary, 70.0);
    assert_eq!(
        traits.last_order_at,
        at_day(90).map(|t| prost_types::Timestamp { nanos: 0, ..t })
    );
    assert_eq!(traits.first_order_at, at_day(40));
}

#[tokio::test]
async fn malformed_standard_events_are_rejected_and_store_nothing() {
    let (server, _clock) = start(1).await;
    let mut client = server.client().await;
    let who = email("bad-order@example.com");
    let mut text_revenue = order(who.clone(), 0.0, 1);
    text_revenue.properties = traits(&[("revenue", text("twelve"))]);
    let status = client.track(text_revenue).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("properties.revenue"),
        "{}",
        status.message()
    );

    let product = prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
            fields: [("quantity".to_owned(), number(-1.0))]
                .into_iter()
                .collect(),
        })),
    };
    let mut negative = order(who.clone(), 10.0, 1);
    negative.properties = traits(&[(
        "products",
        prost_types::Value {
            kind: Some(prost_types::value::Kind::ListValue(
                prost_types::ListValue {
                    values: vec![product],
                },
            )),
        },
    )]);
    let status = client.track(negative).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("properties.products[0].quantity"),
        "{}",
        status.message()
    );
    assert_eq!(
        get_by(&mut client, who).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn unmerge_recomputes_the_traits_of_both_sides() {
    let (server, _clock) = start(100).await;
    let mut client = server.client().await;
    let (ann, bob) = (email("ann.c@example.com"), phone("+447911123654"));
    client.track(order(ann.clone(), 40.0, 90)).await.unwrap();
    client.track(order(bob.clone(), 60.0, 95)).await.unwrap();
    client.track(order(bob.clone(), 60.0, 96)).await.unwrap();
    let (ann_before, bob_before) = (
        computed(&mut client, ann.clone()).await,
        computed(&mut client, bob.clone()).await,
    );
    client
        .identify(identify(vec![ann.clone(), bob.clone()]))
        .await
        .unwrap();
    assert_eq!(computed(&mut client, ann.clone()).await.frequency, 3);
    client
        .unmerge(pb::UnmergeRequest {
            lookup: Some(pb::unmerge_request::Lookup::Identifier(ann.clone())),
            identifiers: vec![bob.clone()],
            message_id: String::new(),
            reason: "wrong merge".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(computed(&mut client, ann).await, ann_before);
    assert_eq!(computed(&mut client, bob).await, bob_before);
}

#[tokio::test]
async fn rfm_scores_rank_customers_after_a_maintenance_run() {
    let (server, _clock) = start(100).await;
    let mut client = server.client().await;
    for (index, revenue) in [10.0, 20.0, 40.0, 80.0, 160.0].into_iter().enumerate() {
        let who = email(&format!("rfm{index}@example.com"));
        for order_number in 0..=index as i64 {
            client
                .track(order(
                    who.clone(),
                    revenue,
                    50 + index as i64 * 10 - order_number,
                ))
                .await
                .unwrap();
        }
    }
    let before = computed(&mut client, email("rfm4@example.com")).await;
    assert_eq!(before.m_score, None, "no quintiles before the first run");
    let report = client
        .run_maintenance(pb::RunMaintenanceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.customers, 5);
    let best = computed(&mut client, email("rfm4@example.com")).await;
    assert_eq!(
        (best.r_score, best.f_score, best.m_score),
        (Some(5), Some(5), Some(5))
    );
    let least = computed(&mut client, email("rfm0@example.com")).await;
    assert_eq!(
        (least.r_score, least.f_score, least.m_score),
        (Some(1), Some(1), Some(1))
    );
    client
        .identify(identify(vec![email("lead@example.com")]))
        .await
        .unwrap();
    let lead = computed(&mut client, email("lead@example.com")).await;
    assert_eq!(
        (lead.r_score, lead.lifecycle_stage.as_str()),
        (None, "lead")
    );
}

#[tokio::test]
async fn retention_removes_old_events_and_keeps_lifetime_aggregates() {
    let clock = Arc::new(ManualClock::new(UnixMillis(
        (START_SECONDS + 60 * DAY_SECONDS) * 1000,
    )));
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.computed.event_retention_days = 30;
    let server = TestServer::start_with_clock(data_dir, config, clock).await;
    let mut client = server.client().await;
    let who = email("old-events@example.com");
    client.track(order(who.clone(), 70.0, 1)).await.unwrap();
    client.track(order(who.clone(), 30.0, 50)).await.unwrap();
    client
        .track(event(who.clone(), "Page Viewed", 55))
        .await
        .unwrap();
    let report = client
        .run_maintenance(pb::RunMaintenanceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.events_removed, 1);
    let profile = get_by(&mut client, who).await.unwrap();
    assert_eq!(profile.event_count, 2);
    assert_eq!(profile.events.len(), 2);
    let traits = profile.computed.unwrap();
    assert_eq!((traits.frequency, traits.monetary), (2, 100.0));
    assert_eq!(traits.first_order_at, at_day(1));
}

/// Recency quintiles are dates: a day passing without new orders leaves
/// every customer's r_score where it was (all age alike, their order holds).
#[tokio::test]
async fn r_scores_hold_from_one_day_to_the_next_without_new_orders() {
    let (server, clock) = start(100).await;
    let mut client = server.client().await;
    // Last orders spread over the 50 days before the clock, one customer
    // per day, so that cut points fall between days.
    for index in 0..50 {
        let who = email(&format!("recent{index}@example.com"));
        client.track(order(who, 10.0, 50 + index)).await.unwrap();
    }
    client
        .run_maintenance(pb::RunMaintenanceRequest {})
        .await
        .unwrap();
    let mut before = Vec::new();
    for index in 0..50 {
        let who = email(&format!("recent{index}@example.com"));
        before.push(computed(&mut client, who).await.r_score);
    }
    assert!(before.contains(&Some(1)) && before.contains(&Some(5)));
    for days in [1, 7] {
        clock.advance_days(days);
        for (index, expected) in before.iter().enumerate() {
            let who = email(&format!("recent{index}@example.com"));
            let now = computed(&mut client, who).await.r_score;
            assert_eq!(now, *expected, "recent{index} after {days} more day(s)");
        }
    }
}

/// Most customers order once; the frequency scores still split them into
/// fifths (ties broken by what they spent, then how recently), so no score
/// is empty.
#[tokio::test]
async fn every_f_score_is_given_when_most_customers_ordered_once() {
    let (server, _clock) = start(100).await;
    let mut client = server.client().await;
    for index in 0..40_i64 {
        let who = email(&format!("once{index}@example.com"));
        let orders = if index < 30 { 1 } else { 2 + index % 3 };
        for number in 0..orders {
            client
                .track(order(who.clone(), 5.0 + index as f64, 60 + number))
                .await
                .unwrap();
        }
    }
    client
        .run_maintenance(pb::RunMaintenanceRequest {})
        .await
        .unwrap();
    let mut per_score = [0_u32; 6];
    for index in 0..40 {
        let who = email(&format!("once{index}@example.com"));
        let score = computed(&mut client, who).await.f_score.expect("a score");
        per_score[score as usize] += 1;
    }
    assert_eq!(per_score, [0, 8, 8, 8, 8, 8], "customers per f_score 1-5");
}

/// Totals are summed exactly: 0.1 + 0.2 is 0.3, and a rule on the sum
/// finds the customer.
#[tokio::test]
async fn money_is_summed_exactly() {
    use sightline::api::pb::check_membership_request::Lookup;
    use sightline::api::pb::segment_service_client::SegmentServiceClient;

    let (server, _clock) = start(100).await;
    let mut client = server.client().await;
    let mut segments = SegmentServiceClient::new(server.channel().await);
    segments
        .put_segment(pb::PutSegmentRequest {
            segment: Some(pb::Segment {
                id: "exact".to_owned(),
                name: "exact".to_owned(),
                rule: "profile.computed.monetary >= 100.5".to_owned(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let small = email("exact@example.com");
    for revenue in [0.1, 0.2] {
        client
            .track(order(small.clone(), revenue, 90))
            .await
            .unwrap();
    }
    let big = email("big@example.com");
    for revenue in [100.1, 0.2, 0.2] {
        client.track(order(big.clone(), revenue, 90)).await.unwrap();
    }
    let traits = computed(&mut client, small).await;
    assert_eq!(
        (
            traits.monetary,
            traits.lifetime_value,
            traits.average_order_value
        ),
        (0.3, 0.3, Some(0.15))
    );
    assert_eq!(computed(&mut client, big.clone()).await.monetary, 100.5);
    let memberships = segments
        .check_membership(pb::CheckMembershipRequest {
            lookup: Some(Lookup::Identifier(big)),
        })
        .await
        .unwrap()
        .into_inner()
        .memberships;
    assert!(
        memberships.iter().any(|m| m.segment_id == "exact"),
        "100.1 + 0.2 + 0.2 >= 100.5: {memberships:?}"
    );
}
