//! The identity-resolution quality harness against a real server: a small
//! run of every scenario. Only the clean scenario has a fixed expectation;
//! the others are printed, as fuzzy matching and merge protection move them,
//! apart from what holds whatever they score: a review can only add joins,
//! so it never lowers recall.

use sightline::quality::{QualityOptions, Scenario, run_quality};

use crate::support::*;

#[tokio::test]
async fn a_small_run_scores_every_scenario_and_clean_data_perfectly() {
    let server = TestServer::start().await;
    // Waits until the server accepts connections.
    let _ = server.client().await;
    let options = QualityOptions {
        server: format!("http://{}", server.address),
        people_per_scenario: 60,
        seed: 20_240_101,
        ..QualityOptions::default()
    };
    let report = run_quality(options).await.expect("harness run");
    println!("{report}");

    for scenario in Scenario::ALL {
        let scenario_report = report
            .scenario(scenario)
            .unwrap_or_else(|| panic!("{scenario} missing from the report"));
        assert_eq!(scenario_report.people, 60, "{scenario}");
        assert_eq!(
            scenario_report.records,
            scenario_report.accepted + scenario_report.duplicate + scenario_report.rejected,
            "{scenario}"
        );
        assert!(
            scenario_report.duplicate > 0,
            "{scenario}: resends are duplicates"
        );
        // On a fresh server the duplicates are exactly the resends that
        // were not rejected, and neither is scored.
        assert_eq!(
            scenario_report.records_scored + scenario_report.duplicate + scenario_report.rejected,
            scenario_report.records,
            "{scenario}: every record is scored, a duplicate or rejected"
        );
        assert!(
            scenario_report.candidates_true <= scenario_report.candidates,
            "{scenario}: true candidates are among the candidates"
        );
        assert!(
            scenario_report.review_recall() >= scenario_report.recall(),
            "{scenario}: accepting candidates only joins profiles"
        );
    }

    let clean = report.scenario(Scenario::Clean).expect("clean scenario");
    assert_eq!(clean.rejected, 0);
    assert_eq!(clean.unresolved, 0);
    assert_eq!(clean.precision(), 1.0);
    assert_eq!(clean.recall(), 1.0);
    assert_eq!(clean.profiles, 60);
    // One profile per person already: nothing is left to review.
    assert_eq!(clean.candidates, 0);

    // Per item, without failing the batch: an invalid phone is rejected
    // by normalization whatever merge protection does.
    let junk = report.scenario(Scenario::Junk).expect("junk scenario");
    assert!(junk.rejected > 0, "the junk phone is rejected per item");

    // Floors for every scenario, with room for the run-to-run spread of a
    // small population (the fuzzy model is estimated while it loads).
    let floors = [
        (Scenario::Typos, 0.99, 0.95),
        (Scenario::NicknamesSwaps, 0.99, 0.95),
        (Scenario::Changes, 0.99, 0.95),
        // Household members on one tablet, some sharing a cookie: a known
        // weakness (a profile joined through a shared cookie holds two
        // people, and each then matches its own records).
        (Scenario::SharedDevices, 0.6, 0.95),
        (Scenario::Junk, 0.99, 0.95),
    ];
    for (scenario, precision_min, recall_min) in floors {
        let scored = report.scenario(scenario).expect("scenario");
        assert!(
            scored.precision() >= precision_min && scored.recall() >= recall_min,
            "{scenario}: precision {:.4} (floor {precision_min}), recall {:.4} (floor {recall_min})",
            scored.precision(),
            scored.recall()
        );
    }
    assert_eq!(junk.super_profiles.count, 0, "junk merges nobody");
    // Merge protection keeps most junk from joining people anyway; what
    // shows the blocklist's patterns at work is that no profile holds any
    // of the values.
    for scenario in Scenario::ALL {
        let scored = report.scenario(scenario).expect("scenario");
        assert_eq!(scored.junk_stored, 0, "{scenario}: junk values stored");
    }
}

#[tokio::test]
async fn the_harness_refuses_a_server_that_holds_profiles() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client
        .identify(identify(vec![email("real.customer@example.com")]))
        .await
        .unwrap();
    let options = QualityOptions {
        server: server.address.to_string(),
        people_per_scenario: 10,
        ..QualityOptions::default()
    };
    let error = run_quality(options).await.expect_err("refused");
    assert!(error.to_string().contains("holds 1 profiles"), "{error}");
    let profile = get_by(&mut client, email("real.customer@example.com"))
        .await
        .unwrap();
    assert_eq!(profile.event_count, 0);
    let count = client
        .count_profiles(sightline::api::pb::CountProfilesRequest {})
        .await
        .unwrap()
        .into_inner()
        .profiles;
    assert_eq!(count, 1, "nothing was written");
}
