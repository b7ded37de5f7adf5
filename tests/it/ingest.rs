//! Bulk loading: every item stands alone; the summary counts them.

use sightline::api::pb::{self, ingest_request::Item};

use crate::support::*;

fn item(item: Item) -> pb::IngestRequest {
    pb::IngestRequest { item: Some(item) }
}

#[tokio::test]
async fn one_bad_item_does_not_reject_the_others() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut first = identify(vec![email("ann@example.com")]);
    first.message_id = "ingest-1".to_owned();
    first.traits = traits(&[("first_name", text("Ann"))]);
    let mut purchase = track(vec![email("ann@example.com")], "Order Completed");
    purchase.properties = traits(&[("revenue", number(42.0))]);
    let items = vec![
        item(Item::Identify(first.clone())),
        item(Item::Identify(identify(vec![email("broken@")]))),
        item(Item::Track(purchase)),
        item(Item::Identify(first)),
        pb::IngestRequest { item: None },
    ];
    let summary = client
        .ingest(futures::stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (summary.accepted, summary.duplicate, summary.rejected),
        (2, 1, 2)
    );
    let errors: Vec<(u64, &str)> = summary
        .errors
        .iter()
        .map(|e| (e.index, e.field.as_str()))
        .collect();
    assert_eq!(
        errors,
        vec![(1, "identify.identifiers[0].value"), (4, "item")]
    );

    let profile = get_by(&mut client, email("ann@example.com")).await.unwrap();
    assert_eq!(trait_text(&profile, "first_name").as_deref(), Some("Ann"));
    assert_eq!(profile.event_count, 1);
}

#[tokio::test]
async fn large_streams_apply_every_item_in_order() {
    const ITEMS: usize = 3_000;
    let server = TestServer::start_allowing("device_id", ITEMS).await;
    let mut client = server.client().await;
    // Each item links a new device to a shared user id, and later items
    // depend on earlier ones across chunk boundaries.
    let items = (0..ITEMS).map(|i| {
        let mut event = track(
            vec![user("bulk"), id("device_id", &format!("d{i}"))],
            "Page Viewed",
        );
        event.message_id = format!("bulk-{i}");
        item(Item::Track(event))
    });
    let summary = client
        .ingest(futures::stream::iter(items.collect::<Vec<_>>()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (summary.accepted, summary.duplicate, summary.rejected),
        (ITEMS as u64, 0, 0)
    );
    let profile = get_by(&mut client, id("device_id", "d2999")).await.unwrap();
    assert_eq!(profile.event_count, ITEMS as u64);
    assert_eq!(profile.identifiers.len(), ITEMS + 1);
    assert!(profile.merged_profile_ids.is_empty());
}

#[tokio::test]
async fn rejected_items_report_at_most_the_configured_number_of_errors() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.limits.ingest_errors_max = 3;
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    let items = (0..10).map(|_| item(Item::Track(track(vec![], "x"))));
    let summary = client
        .ingest(futures::stream::iter(items.collect::<Vec<_>>()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.rejected, 10);
    assert_eq!(summary.errors.len(), 3);
}
