//! User-defined computed traits through the API, with a clock the test
//! controls: windows that age, conditions, backfills, merges, rules.

use std::time::Duration;

use sightline::api::pb::{self, segment_service_client::SegmentServiceClient};
use tonic::Code;
use tonic::transport::Channel;

use crate::computed::{at_day, start};
use crate::support::*;

type Segments = SegmentServiceClient<Channel>;

fn definition(
    name: &str,
    event: &str,
    aggregation: &str,
    property: &str,
    window_days: u32,
    condition: &str,
) -> pb::PutComputedTraitRequest {
    pb::PutComputedTraitRequest {
        computed_trait: Some(pb::ComputedTrait {
            name: name.to_owned(),
            event: event.to_owned(),
            aggregation: aggregation.to_owned(),
            property: property.to_owned(),
            window_days,
            r#where: condition.to_owned(),
            ..Default::default()
        }),
    }
}

fn event(
    who: pb::Identifier,
    name: &str,
    day: i64,
    properties: &[(&str, prost_types::Value)],
) -> pb::TrackRequest {
    let mut request = track(vec![who], name);
    request.properties = traits(properties);
    request.timestamp = at_day(day);
    request
}

async fn custom(
    client: &mut Client,
    who: pb::Identifier,
    name: &str,
) -> Option<prost_types::Value> {
    let profile = get_by(client, who).await.unwrap();
    profile.computed?.custom?.fields.get(name).cloned()
}

fn as_number(value: Option<prost_types::Value>) -> Option<f64> {
    match value?.kind? {
        prost_types::value::Kind::NumberValue(number) => Some(number),
        _ => None,
    }
}

fn as_text(value: Option<prost_types::Value>) -> Option<String> {
    match value?.kind? {
        prost_types::value::Kind::StringValue(text) => Some(text),
        _ => None,
    }
}

/// Waits until the trait's backfill has run.
async fn until_ready(segments: &mut Segments, name: &str) {
    for _ in 0..200 {
        let answer = segments
            .get_computed_trait(pb::GetComputedTraitRequest {
                name: name.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if answer.computed_trait.is_some_and(|t| t.ready) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("computed trait {name} never became ready");
}

#[tokio::test]
async fn a_windowed_count_ages_without_new_events() {
    let (server, clock) = start(10).await;
    let mut client = server.client().await;
    let mut segments = SegmentServiceClient::new(server.channel().await);
    segments
        .put_computed_trait(definition("clicks_7d", "Email Clicked", "count", "", 7, ""))
        .await
        .unwrap();
    until_ready(&mut segments, "clicks_7d").await;
    let who = email("reader@example.com");
    for _ in 0..3 {
        client
            .track(event(who.clone(), "Email Clicked", 10, &[]))
            .await
            .unwrap();
    }
    client
        .track(event(who.clone(), "Email Opened", 10, &[]))
        .await
        .unwrap();
    assert_eq!(
        as_number(custom(&mut client, who.clone(), "clicks_7d").await),
        Some(3.0)
    );
    clock.advance_days(8);
    assert_eq!(
        as_number(custom(&mut client, who, "clicks_7d").await),
        Some(0.0)
    );
}

#[tokio::test]
async fn conditions_sums_and_most_frequent_values_and_a_backfill() {
    let (server, _clock) = start(20).await;
    let mut client = server.client().await;
    let who = email("shopper@example.com");
    for (revenue, currency, day) in [
        (100.1, "GBP", 1),
        (0.2, "GBP", 2),
        (50.0, "EUR", 3),
        (0.2, "GBP", 4),
    ] {
        client
            .track(event(
                who.clone(),
                "Order Completed",
                day,
                &[("revenue", number(revenue)), ("currency", text(currency))],
            ))
            .await
            .unwrap();
    }
    for (category, day) in [("shoes", 5), ("bags", 6), ("shoes", 7)] {
        client
            .track(event(
                who.clone(),
                "Product Viewed",
                day,
                &[("category", text(category))],
            ))
            .await
            .unwrap();
    }
    // Defined after the events: the backfill folds in what is stored.
    let mut segments = SegmentServiceClient::new(server.channel().await);
    segments
        .put_computed_trait(definition(
            "gbp_revenue",
            "Order Completed",
            "sum",
            "revenue",
            0,
            r#"properties.currency == "GBP""#,
        ))
        .await
        .unwrap();
    segments
        .put_computed_trait(definition(
            "top_category",
            "Product Viewed",
            "most_frequent",
            "category",
            30,
            "",
        ))
        .await
        .unwrap();
    until_ready(&mut segments, "gbp_revenue").await;
    until_ready(&mut segments, "top_category").await;
    assert_eq!(
        as_number(custom(&mut client, who.clone(), "gbp_revenue").await),
        Some(100.5)
    );
    assert_eq!(
        as_text(custom(&mut client, who.clone(), "top_category").await).as_deref(),
        Some("shoes")
    );

    // And later events keep it current.
    client
        .track(event(
            who.clone(),
            "Order Completed",
            8,
            &[("revenue", number(9.5)), ("currency", text("GBP"))],
        ))
        .await
        .unwrap();
    assert_eq!(
        as_number(custom(&mut client, who.clone(), "gbp_revenue").await),
        Some(110.0)
    );

    let listed = segments
        .list_computed_traits(pb::ListComputedTraitsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = listed
        .computed_traits
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, ["gbp_revenue", "top_category"]);
    segments
        .delete_computed_trait(pb::DeleteComputedTraitRequest {
            name: "top_category".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(custom(&mut client, who, "top_category").await, None);
    let status = segments
        .get_computed_trait(pb::GetComputedTraitRequest {
            name: "top_category".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_segment_on_a_custom_trait_follows_it_in_real_time() {
    let (server, _clock) = start(20).await;
    let mut client = server.client().await;
    let mut segments = SegmentServiceClient::new(server.channel().await);
    segments
        .put_computed_trait(definition(
            "last_country",
            "Order Completed",
            "last",
            "country",
            0,
            "",
        ))
        .await
        .unwrap();
    until_ready(&mut segments, "last_country").await;
    segments
        .put_segment(pb::PutSegmentRequest {
            segment: Some(pb::Segment {
                id: "uk-buyers".to_owned(),
                name: "UK buyers".to_owned(),
                rule: r#"profile.computed.custom.last_country == "UK""#.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let who = email("mover@example.com");
    let member = |segments: &mut Segments, who: pb::Identifier| {
        let mut segments = segments.clone();
        async move {
            segments
                .check_membership(pb::CheckMembershipRequest {
                    lookup: Some(pb::check_membership_request::Lookup::Identifier(who)),
                })
                .await
                .unwrap()
                .into_inner()
                .memberships
                .iter()
                .any(|m| m.segment_id == "uk-buyers")
        }
    };
    client
        .track(event(
            who.clone(),
            "Order Completed",
            1,
            &[("country", text("UK"))],
        ))
        .await
        .unwrap();
    assert!(member(&mut segments, who.clone()).await);
    client
        .track(event(
            who.clone(),
            "Order Completed",
            2,
            &[("country", text("FR"))],
        ))
        .await
        .unwrap();
    assert!(!member(&mut segments, who.clone()).await);
    // A late event changes nothing: `last` is by event time.
    client
        .track(event(
            who.clone(),
            "Order Completed",
            0,
            &[("country", text("UK"))],
        ))
        .await
        .unwrap();
    assert!(!member(&mut segments, who).await);
}

#[tokio::test]
async fn merged_profiles_hold_what_one_profile_with_every_event_holds() {
    let (server, _clock) = start(30).await;
    let mut client = server.client().await;
    let mut segments = SegmentServiceClient::new(server.channel().await);
    for (name, aggregation, property) in [
        ("views", "count", ""),
        ("categories", "unique_values", "category"),
        ("first_category", "first", "category"),
        ("max_price", "max", "price"),
        ("avg_price", "avg", "price"),
    ] {
        segments
            .put_computed_trait(definition(
                name,
                "Product Viewed",
                aggregation,
                property,
                30,
                "",
            ))
            .await
            .unwrap();
        until_ready(&mut segments, name).await;
    }
    let views = [
        ("hats", 5.0, 1),
        ("shoes", 50.0, 2),
        ("bags", 20.0, 3),
        ("shoes", 45.0, 4),
    ];
    let (home, work, single) = (
        email("home@example.com"),
        user("w-1"),
        email("single@example.com"),
    );
    for (index, (category, price, day)) in views.iter().enumerate() {
        let properties = [("category", text(category)), ("price", number(*price))];
        let who = if index % 2 == 0 {
            home.clone()
        } else {
            work.clone()
        };
        client
            .track(event(who, "Product Viewed", *day, &properties))
            .await
            .unwrap();
        client
            .track(event(single.clone(), "Product Viewed", *day, &properties))
            .await
            .unwrap();
    }
    client
        .identify(identify(vec![home.clone(), work]))
        .await
        .unwrap();
    let merged = get_by(&mut client, home)
        .await
        .unwrap()
        .computed
        .unwrap()
        .custom;
    let one = get_by(&mut client, single)
        .await
        .unwrap()
        .computed
        .unwrap()
        .custom;
    assert!(
        merged.as_ref().is_some_and(|m| m.fields.len() == 5),
        "{merged:?}"
    );
    assert_eq!(merged, one);
}

#[tokio::test]
async fn bad_definitions_name_the_field_and_store_nothing() {
    let (server, _clock) = start(1).await;
    let mut segments = SegmentServiceClient::new(server.channel().await);
    let cases = [
        (
            definition("t", "E", "median", "x", 0, ""),
            "computed_trait.aggregation",
        ),
        (
            definition("t", "E", "sum", "a..b", 0, ""),
            "computed_trait.property",
        ),
        (
            definition("t", "E", "sum", "", 0, ""),
            "computed_trait.property",
        ),
        (
            definition("1t", "E", "count", "", 0, ""),
            "computed_trait.name",
        ),
        (
            definition("t", "E", "count", "", 9999, ""),
            "computed_trait.window_days",
        ),
        (
            definition("t", "E", "count", "", 0, "properties.x =="),
            "computed_trait.where",
        ),
        (
            definition("t", "E", "count", "", 0, "profile.traits.x == 1"),
            "computed_trait.where",
        ),
    ];
    for (request, field) in cases {
        let status = segments
            .put_computed_trait(request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let status = segments
        .put_computed_trait(definition("t", "E", "count", "", 0, "\n  properties.x +"))
        .await
        .unwrap_err();
    assert!(status.message().contains("line 2"), "{}", status.message());
    let listed = segments
        .list_computed_traits(pb::ListComputedTraitsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.computed_traits.is_empty());
}
