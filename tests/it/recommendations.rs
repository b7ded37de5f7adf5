//! Product recommendations through the API: co-occurrence ranking and its
//! fallbacks, consent and holdouts, and the counts after erasure, merge
//! and unmerge.

use sightline::api::pb::{
    self, ConsentState, recommendation_service_client::RecommendationServiceClient,
    segment_service_client::SegmentServiceClient,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

type Recommendations = RecommendationServiceClient<Channel>;

async fn recommendations(server: &TestServer) -> Recommendations {
    let _ = server.client().await;
    RecommendationServiceClient::new(server.channel().await)
}

fn product(id: &str, category: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
            fields: [
                ("product_id".to_owned(), text(id)),
                ("name".to_owned(), text(&format!("Product {id}"))),
                ("category".to_owned(), text(category)),
                ("price".to_owned(), number(10.0)),
            ]
            .into_iter()
            .collect(),
        })),
    }
}

fn order(who: pb::Identifier, products: &[&str]) -> pb::TrackRequest {
    let list = prost_types::Value {
        kind: Some(prost_types::value::Kind::ListValue(
            prost_types::ListValue {
                values: products.iter().map(|id| product(id, "gear")).collect(),
            },
        )),
    };
    let mut request = track(vec![who], "Order Completed");
    request.properties = traits(&[("products", list), ("revenue", number(20.0))]);
    request
}

fn view(who: pb::Identifier, id: &str, category: &str) -> pb::TrackRequest {
    let mut request = track(vec![who], "Product Viewed");
    request.properties = traits(&[
        ("product_id", text(id)),
        ("name", text(&format!("Product {id}"))),
        ("category", text(category)),
    ]);
    request
}

async fn grant_personalisation(client: &mut Client, who: pb::Identifier, granted: bool) {
    let state = if granted {
        ConsentState::Granted
    } else {
        ConsentState::Withdrawn
    };
    client
        .update_consent(pb::UpdateConsentRequest {
            lookup: Some(pb::update_consent_request::Lookup::Identifier(who)),
            changes: vec![pb::ConsentChange {
                channel: "email".to_owned(),
                purpose: "personalisation".to_owned(),
                state: state.into(),
            }],
            timestamp: None,
            message_id: String::new(),
            source: "preference-centre".to_owned(),
        })
        .await
        .unwrap();
}

fn ask(who: pb::Identifier) -> pb::GetRecommendationsRequest {
    pb::GetRecommendationsRequest {
        lookup: Some(pb::get_recommendations_request::Lookup::Identifier(who)),
        limit: 10,
        ..Default::default()
    }
}

fn ids(recommendations: &[pb::Recommendation]) -> Vec<String> {
    recommendations
        .iter()
        .map(|r| {
            r.product
                .as_ref()
                .map(|p| p.product_id.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// Three people bought {A, B}, {A, B} and {A, C}.
async fn three_orders(client: &mut Client) {
    for (who, products) in [
        ("one@example.com", ["A", "B"]),
        ("two@example.com", ["A", "B"]),
        ("three@example.com", ["A", "C"]),
    ] {
        client.track(order(email(who), &products)).await.unwrap();
    }
}

#[tokio::test]
async fn bought_together_ranks_first_and_falls_back_to_popularity() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut recommender = recommendations(&server).await;
    three_orders(&mut client).await;

    let fourth = email("four@example.com");
    client.track(order(fourth.clone(), &["A"])).await.unwrap();
    grant_personalisation(&mut client, fourth.clone(), true).await;
    let answer = recommender
        .get_recommendations(ask(fourth.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.personalised, "{answer:?}");
    assert_eq!(ids(&answer.recommendations), ["B", "C"], "{answer:?}");
    let first = &answer.recommendations[0];
    assert_eq!(first.reason(), pb::RecommendationReason::Together);
    assert_eq!(first.because_of_product_id, "A");
    // Names come from catalogue uploads, never from a person's events.
    assert_eq!(first.explanation, "bought together with A");

    let fifth = email("five@example.com");
    client.track(order(fifth.clone(), &["B"])).await.unwrap();
    grant_personalisation(&mut client, fifth.clone(), true).await;
    let answer = recommender
        .get_recommendations(ask(fifth.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ids(&answer.recommendations).first().map(String::as_str),
        Some("A")
    );
    assert!(
        !ids(&answer.recommendations).contains(&"B".to_owned()),
        "bought already"
    );

    let mut including = ask(fifth.clone());
    including.include_purchased = true;
    let answer = recommender
        .get_recommendations(including)
        .await
        .unwrap()
        .into_inner();
    assert!(
        ids(&answer.recommendations).contains(&"B".to_owned()),
        "{answer:?}"
    );

    // Someone with no history gets what most people bought.
    let newcomer = email("new@example.com");
    client
        .identify(identify(vec![newcomer.clone()]))
        .await
        .unwrap();
    grant_personalisation(&mut client, newcomer.clone(), true).await;
    let answer = recommender
        .get_recommendations(ask(newcomer.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&answer.recommendations), ["A", "B", "C"], "{answer:?}");
    assert!(
        answer
            .recommendations
            .iter()
            .all(|r| r.reason() == pb::RecommendationReason::Popular
                && r.explanation == "popular now")
    );

    // An unavailable product never appears, whatever ranks it.
    let put = recommender
        .put_products(pb::PutProductsRequest {
            products: vec![pb::Product {
                product_id: "B".to_owned(),
                name: "Trail Shoe".to_owned(),
                category: "shoes".to_owned(),
                price: Some(80.0),
                available: Some(false),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((put.created, put.updated), (0, 1));
    for who in [fourth, newcomer] {
        let answer = recommender
            .get_recommendations(ask(who))
            .await
            .unwrap()
            .into_inner();
        assert!(
            !ids(&answer.recommendations).contains(&"B".to_owned()),
            "{answer:?}"
        );
    }
    let related = recommender
        .get_related_products(pb::GetRelatedProductsRequest {
            product_id: "A".to_owned(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&related.products), ["C"]);
}

#[tokio::test]
async fn interests_pick_the_fallback_and_a_category_narrows_the_list() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut recommender = recommendations(&server).await;
    for (who, id, category) in [
        ("a@example.com", "boot", "Shoes"),
        ("b@example.com", "boot", "Shoes"),
        ("c@example.com", "sandal", "Shoes"),
        ("d@example.com", "tent", "Camping"),
        ("e@example.com", "tent", "Camping"),
        ("f@example.com", "tent", "Camping"),
    ] {
        client.track(view(email(who), id, category)).await.unwrap();
    }
    let browser = email("browser@example.com");
    client
        .track(view(browser.clone(), "slipper", "shoes"))
        .await
        .unwrap();
    grant_personalisation(&mut client, browser.clone(), true).await;
    let answer = recommender
        .get_recommendations(ask(browser.clone()))
        .await
        .unwrap()
        .into_inner();
    let listed = ids(&answer.recommendations);
    assert_eq!(&listed[..2], ["boot", "sandal"], "{answer:?}");
    assert_eq!(
        answer.recommendations[0].reason(),
        pb::RecommendationReason::Interest
    );
    assert_eq!(
        answer.recommendations[0].explanation,
        "popular in shoes, which you browse"
    );
    assert!(listed.contains(&"tent".to_owned()), "then popular overall");

    let mut camping = ask(browser);
    camping.category = "camping".to_owned();
    let answer = recommender
        .get_recommendations(camping)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&answer.recommendations), ["tent"]);
}

#[tokio::test]
async fn without_consent_or_in_a_holdout_the_list_is_not_personalised() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut recommender = recommendations(&server).await;
    let mut segments = SegmentServiceClient::new(server.channel().await);
    segments
        .put_segment(pb::PutSegmentRequest {
            segment: Some(pb::Segment {
                id: "buyers".to_owned(),
                name: "Buyers".to_owned(),
                rule: "profile.computed.frequency > 0".to_owned(),
                holdout_percent: 50.0,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    three_orders(&mut client).await;
    // Popular: A (3 buyers), B (2), C (1). Personalised for a buyer of C:
    // A first (bought with C), then the popular rest.
    let mut held_out = None;
    let mut member = None;
    for n in 0..40 {
        let who = email(&format!("shopper{n}@example.com"));
        let written = client
            .track(order(who.clone(), &["C"]))
            .await
            .unwrap()
            .into_inner();
        grant_personalisation(&mut client, who.clone(), true).await;
        let check = segments
            .check_membership(pb::CheckMembershipRequest {
                lookup: Some(pb::check_membership_request::Lookup::ProfileId(
                    written.profile_id.clone(),
                )),
            })
            .await
            .unwrap()
            .into_inner();
        let holdout = check
            .memberships
            .iter()
            .any(|m| m.segment_id == "buyers" && m.holdout);
        if holdout {
            held_out.get_or_insert(who);
        } else {
            member.get_or_insert(who);
        }
        if held_out.is_some() && member.is_some() {
            break;
        }
    }
    let (held_out, member) = (
        held_out.expect("a holdout member"),
        member.expect("a member"),
    );

    let mut asking = ask(held_out.clone());
    asking.holdout_segment_id = "buyers".to_owned();
    let answer = recommender
        .get_recommendations(asking)
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.personalised);
    assert_eq!(answer.not_personalised_reason, "holdout of segment buyers");
    assert!(
        answer
            .recommendations
            .iter()
            .all(|r| r.reason() == pb::RecommendationReason::Popular),
        "{answer:?}"
    );
    let control_list = ids(&answer.recommendations);

    let mut asking = ask(member.clone());
    asking.holdout_segment_id = "buyers".to_owned();
    let answer = recommender
        .get_recommendations(asking)
        .await
        .unwrap()
        .into_inner();
    assert!(answer.personalised, "{answer:?}");
    assert_eq!(
        answer.recommendations[0].reason(),
        pb::RecommendationReason::Together
    );

    grant_personalisation(&mut client, member.clone(), false).await;
    let answer = recommender
        .get_recommendations(ask(member))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.personalised);
    assert_eq!(
        answer.not_personalised_reason,
        "personalisation consent withdrawn"
    );
    assert_eq!(
        ids(&answer.recommendations),
        control_list,
        "one control list for everyone: nothing left out for what the person bought"
    );
    assert!(control_list.contains(&"C".to_owned()));

    let stranger = email("never-asked@example.com");
    client.track(order(stranger.clone(), &["A"])).await.unwrap();
    let answer = recommender
        .get_recommendations(ask(stranger))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.personalised);
    assert_eq!(answer.not_personalised_reason, "no personalisation consent");

    let mut unknown = ask(held_out);
    unknown.holdout_segment_id = "no-such-segment".to_owned();
    let status = recommender.get_recommendations(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// Related products of every product, as a comparable answer.
async fn related_of(
    recommender: &mut Recommendations,
    products: &[&str],
) -> Vec<(String, Vec<(String, String, String)>)> {
    let mut all = Vec::new();
    for id in products {
        let answer = recommender
            .get_related_products(pb::GetRelatedProductsRequest {
                product_id: (*id).to_owned(),
                limit: 10,
            })
            .await
            .map(|answer| answer.into_inner().products)
            .unwrap_or_default();
        all.push((
            (*id).to_owned(),
            answer
                .iter()
                .map(|r| {
                    (
                        r.product
                            .as_ref()
                            .map(|p| p.product_id.clone())
                            .unwrap_or_default(),
                        format!("{:.12}", r.score),
                        r.explanation.clone(),
                    )
                })
                .collect(),
        ));
    }
    all
}

#[tokio::test]
async fn erasure_leaves_the_counts_as_if_the_person_never_ordered() {
    let with = TestServer::start().await;
    let without = TestServer::start().await;
    let everything = ["A", "B", "C", "D"];
    for server in [&with, &without] {
        let mut client = server.client().await;
        three_orders(&mut client).await;
        client
            .track(order(email("other@example.com"), &["A", "D", "C"]))
            .await
            .unwrap();
        client
            .track(view(email("viewer@example.com"), "D", "gear"))
            .await
            .unwrap();
    }
    let mut client = with.client().await;
    let leaving = email("leaving@example.com");
    client
        .track(order(leaving.clone(), &["A", "D"]))
        .await
        .unwrap();
    client
        .track(view(leaving.clone(), "B", "gear"))
        .await
        .unwrap();
    let mut recommender = recommendations(&with).await;
    let before = related_of(&mut recommender, &everything).await;

    let mut privacy = pb::privacy_service_client::PrivacyServiceClient::new(with.channel().await);
    privacy
        .erase_subject(pb::EraseSubjectRequest {
            lookup: Some(pb::erase_subject_request::Lookup::Identifier(leaving)),
            request_id: "erase-1".to_owned(),
            requester: "test".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let after = related_of(&mut recommender, &everything).await;
    let mut reference = recommendations(&without).await;
    let expected = related_of(&mut reference, &everything).await;
    assert_ne!(before, expected, "the person changed the counts");
    assert_eq!(after, expected);

    // And the counts on disk say the same after a restart.
    let data_dir = with.stop().await;
    let restarted = TestServer::start_in(data_dir).await;
    let mut recommender = recommendations(&restarted).await;
    assert_eq!(related_of(&mut recommender, &everything).await, expected);
}

#[tokio::test]
async fn merge_and_unmerge_move_the_counts_with_the_history() {
    // Two records of one person, merged by a later call carrying both
    // identifiers, count as one person who bought everything.
    let merged = TestServer::start().await;
    let single = TestServer::start().await;
    let separate = TestServer::start().await;
    let everything = ["A", "B", "C", "D"];
    for server in [&merged, &single, &separate] {
        let mut client = server.client().await;
        three_orders(&mut client).await;
    }
    let mut client = merged.client().await;
    client
        .track(order(email("home@example.com"), &["A", "D"]))
        .await
        .unwrap();
    client.track(order(user("u-9"), &["B"])).await.unwrap();
    client
        .identify(identify(vec![email("home@example.com"), user("u-9")]))
        .await
        .unwrap();
    let mut one = single.client().await;
    one.track(order(email("home@example.com"), &["A", "D"]))
        .await
        .unwrap();
    one.track(order(email("home@example.com"), &["B"]))
        .await
        .unwrap();
    let mut merged_rec = recommendations(&merged).await;
    let mut single_rec = recommendations(&single).await;
    assert_eq!(
        related_of(&mut merged_rec, &everything).await,
        related_of(&mut single_rec, &everything).await
    );

    // Unmerged again, they are two people, as if never merged.
    let profile = get_by(&mut client, user("u-9")).await.unwrap();
    client
        .unmerge(pb::UnmergeRequest {
            lookup: Some(pb::unmerge_request::Lookup::ProfileId(
                profile.profile_id.clone(),
            )),
            identifiers: vec![user("u-9")],
            message_id: String::new(),
            reason: "two people".to_owned(),
        })
        .await
        .unwrap();
    let mut apart = separate.client().await;
    apart
        .track(order(email("home@example.com"), &["A", "D"]))
        .await
        .unwrap();
    apart.track(order(user("u-9"), &["B"])).await.unwrap();
    let mut separate_rec = recommendations(&separate).await;
    assert_eq!(
        related_of(&mut merged_rec, &everything).await,
        related_of(&mut separate_rec, &everything).await
    );
}

#[tokio::test]
async fn bad_requests_name_the_field_and_store_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut recommender = recommendations(&server).await;
    three_orders(&mut client).await;

    let entry = |id: &str| pb::Product {
        product_id: id.to_owned(),
        name: "Lamp".to_owned(),
        category: "home".to_owned(),
        price: Some(5.0),
        available: None,
    };
    let status = recommender
        .put_products(pb::PutProductsRequest {
            products: vec![entry("lamp"), entry("lamp")],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("products[1].product_id"),
        "{status:?}"
    );
    let mut negative = entry("lamp");
    negative.price = Some(-1.0);
    let status = recommender
        .put_products(pb::PutProductsRequest {
            products: vec![entry("rug"), negative],
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("products[1].price"), "{status:?}");
    for id in ["lamp", "rug"] {
        let status = recommender
            .get_related_products(pb::GetRelatedProductsRequest {
                product_id: id.to_owned(),
                limit: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id} was not stored");
    }
    let status = recommender
        .get_related_products(pb::GetRelatedProductsRequest {
            product_id: "bad\u{7}id".to_owned(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("product_id"));

    let status = recommender
        .get_recommendations(ask(email("nobody@example.com")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = recommender
        .get_recommendations(pb::GetRecommendationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A good upload creates the entry; it shows in recommendations.
    let put = recommender
        .put_products(pb::PutProductsRequest {
            products: vec![entry("lamp")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((put.created, put.updated), (1, 0));
}

#[tokio::test]
async fn the_subject_export_says_what_the_recommender_holds() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let who = email("shopper@example.com");
    client.track(order(who.clone(), &["A", "B"])).await.unwrap();
    client.track(view(who.clone(), "C", "gear")).await.unwrap();
    let mut privacy = pb::privacy_service_client::PrivacyServiceClient::new(server.channel().await);
    let mut stream = privacy
        .export_subject(pb::ExportSubjectRequest {
            lookup: Some(pb::export_subject_request::Lookup::Identifier(who)),
            request_id: "export-1".to_owned(),
            requester: "test".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend(chunk.data);
    }
    let document: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let held = &document["profile"]["recommendations"];
    let mut products: Vec<(String, u64)> = held["products"]
        .as_array()
        .expect("products")
        .iter()
        .map(|p| {
            (
                p["product_id"].as_str().unwrap_or_default().to_owned(),
                p["purchases"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    products.sort();
    assert_eq!(
        products,
        [
            ("A".to_owned(), 1),
            ("B".to_owned(), 1),
            ("C".to_owned(), 0)
        ]
    );
    assert!(
        held["logic"]
            .as_str()
            .is_some_and(|logic| logic.contains("consent"))
    );
}
