//! Finding profiles: listing and counting the live ones, and previewing a
//! rule without defining a segment.

use std::time::Duration;

use sightline::api::pb::{self, segment_service_client::SegmentServiceClient};
use tonic::Code;

use crate::support::*;

async fn count(client: &mut Client) -> u64 {
    client
        .count_profiles(pb::CountProfilesRequest {})
        .await
        .expect("count")
        .into_inner()
        .profiles
}

async fn list_all(client: &mut Client, page_size: u32) -> Vec<String> {
    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_profiles(pb::ListProfilesRequest {
                page_size,
                page_token: token.clone(),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.profile_ids.len() <= page_size as usize);
        ids.extend(page.profile_ids);
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

fn spender(n: usize, revenue: f64) -> pb::TrackRequest {
    let mut order = track(
        vec![email(&format!("buyer{n}@example.com"))],
        "Order Completed",
    );
    order.properties = traits(&[("revenue", number(revenue))]);
    order
}

#[tokio::test]
async fn profiles_are_listed_in_id_order_and_counted_through_merges_and_restarts() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let config = test_config(&data_dir);
    let extras = Extras {
        http: false,
        metrics: true,
    };
    let server = TestServer::start_with_extras(data_dir, config.clone(), extras).await;
    let metrics_port = server.metrics_port.expect("a metrics listener");
    let mut client = server.client().await;
    assert_eq!(count(&mut client).await, 0);
    for n in 0..7 {
        client
            .identify(identify(vec![email(&format!("p{n}@example.com"))]))
            .await
            .unwrap();
    }
    // p0 and p1 are one person.
    client
        .identify(identify(vec![
            email("p0@example.com"),
            email("p1@example.com"),
        ]))
        .await
        .unwrap();
    assert_eq!(count(&mut client).await, 6);
    let listed = list_all(&mut client, 4).await;
    assert_eq!(listed.len(), 6, "{listed:?}");
    let numbers: Vec<u64> = listed
        .iter()
        .map(|id| id.trim_start_matches('p').parse().expect("an id"))
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "{listed:?}"
    );
    for id in &listed {
        get_by_id(&mut client, id)
            .await
            .expect("a listed profile exists");
    }
    let scraped = crate::metrics::scrape(metrics_port, "/metrics").await;
    assert_eq!(
        crate::metrics::value(&scraped, "sightline_profiles"),
        Some(6.0)
    );
    let bad = client
        .list_profiles(pb::ListProfilesRequest {
            page_size: 10,
            page_token: "nonsense".to_owned(),
        })
        .await
        .expect_err("a made-up token");
    assert_eq!(bad.code(), Code::InvalidArgument);

    let mut privacy = pb::privacy_service_client::PrivacyServiceClient::new(server.channel().await);
    privacy
        .erase_subject(pb::EraseSubjectRequest {
            lookup: Some(pb::erase_subject_request::Lookup::Identifier(email(
                "p6@example.com",
            ))),
            reason: "Art. 17 request".to_owned(),
            ..Default::default()
        })
        .await
        .expect("erase");
    assert_eq!(count(&mut client).await, 5);

    let data_dir = server.stop().await;
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    assert_eq!(count(&mut client).await, 5, "the count survives a restart");
    server.stop().await;
}

#[tokio::test]
async fn a_preview_agrees_with_the_members_of_the_same_rule_once_defined() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for n in 0..30 {
        client.track(spender(n, 10.0 * n as f64)).await.unwrap();
    }
    let mut segments = SegmentServiceClient::new(server.channel().await);
    let rule = "profile.computed.monetary >= 150.0";
    let preview = segments
        .preview_segment(pb::PreviewSegmentRequest {
            rule: rule.to_owned(),
            page_size: 5,
        })
        .await
        .expect("preview")
        .into_inner();
    assert_eq!(preview.count, 15);
    assert_eq!(preview.profile_ids.len(), 5);

    segments
        .put_segment(pb::PutSegmentRequest {
            segment: Some(pb::Segment {
                id: "big-spenders".to_owned(),
                name: "Big spenders".to_owned(),
                rule: rule.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .expect("define");
    let mut members = Vec::new();
    for _ in 0..3000 {
        let mut stream = segments
            .list_members(pb::ListMembersRequest {
                segment_id: "big-spenders".to_owned(),
                ..Default::default()
            })
            .await
            .expect("members")
            .into_inner();
        members.clear();
        while let Some(member) = stream.message().await.expect("member") {
            members.push(member.profile_id);
        }
        if members.len() as u64 == preview.count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(members.len() as u64, preview.count);
    assert_eq!(&members[..5], &preview.profile_ids[..]);

    // An invalid rule gets the error PutSegment gives it, position included.
    let broken = "profile.computed.frequency > > 1";
    let previewed = segments
        .preview_segment(pb::PreviewSegmentRequest {
            rule: broken.to_owned(),
            page_size: 0,
        })
        .await
        .expect_err("invalid");
    let defined = segments
        .put_segment(pb::PutSegmentRequest {
            segment: Some(pb::Segment {
                id: "broken".to_owned(),
                rule: broken.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("invalid");
    assert_eq!(previewed.code(), Code::InvalidArgument);
    assert_eq!(
        previewed.message().trim_start_matches("rule: "),
        defined.message().trim_start_matches("segment.rule: ")
    );
    assert!(
        previewed.message().contains("column 30"),
        "{}",
        previewed.message()
    );
    server.stop().await;
}
