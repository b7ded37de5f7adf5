//! `sightline import`: a CSV file streamed through `Ingest` into a real
//! server, with rejected rows written beside it and reruns that only report
//! duplicates.

use std::path::Path;

use sightline::import::{ImportOptions, ImportSummary};

use crate::support::*;

const CSV: &str = "\
Email,Mobile,Customer ID,First Name,Surname,DOB,Postcode,Loyalty Tier,Signed Up
ann@example.com,07911 123001,c-1,Ann,Lee,1990-04-01,SW1A 1AA,gold,2024-01-05
bob@example.com,,c-2,Bob,Stone,,LS1 4AP,silver,2024-02-01T09:30:00Z
not-an-email,,,Cat,Moss,,,bronze,2024-03-01
,,,Dan,Nobody,,,,2024-03-02
eve@example.com,07911 123005,,Eve,\"Hart, Jr\",,,\"line one
line two\",1709251200
fay@example.com,,c-6,Fay,Wood,,,,yesterday
";

fn options(server: &TestServer, file: &Path) -> ImportOptions {
    ImportOptions {
        server: format!("http://{}", server.address),
        token: Some("test-token".to_owned()),
        file: file.to_owned(),
        overrides: Vec::new(),
        timestamp_column: Some("Signed Up".to_owned()),
        rejects: None,
        source: "crm-export".to_owned(),
        // Several streams for six rows: the bookkeeping across streams is
        // what a long file relies on.
        stream_rows: 2,
        quiet: true,
    }
}

fn counts(summary: &ImportSummary) -> (u64, u64, u64, u64) {
    (
        summary.rows,
        summary.accepted,
        summary.duplicate,
        summary.rejected,
    )
}

#[tokio::test]
async fn a_csv_file_becomes_profiles_and_bad_rows_are_set_aside() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, CSV).unwrap();

    let summary = sightline::import::run(&options(&server, &file))
        .await
        .unwrap();
    assert_eq!(counts(&summary), (6, 3, 0, 3), "{summary:?}");
    assert_eq!(summary.rejected_unlisted, 0);

    let ann = get_by(&mut client, phone("+447911123001")).await.unwrap();
    assert_eq!(
        identifier_values(&ann),
        vec![
            "email:ann@example.com",
            "phone:+447911123001",
            "user_id:c-1"
        ]
    );
    assert_eq!(trait_text(&ann, "first_name").as_deref(), Some("Ann"));
    assert_eq!(trait_text(&ann, "last_name").as_deref(), Some("Lee"));
    assert_eq!(trait_text(&ann, "birthday").as_deref(), Some("1990-04-01"));
    assert_eq!(trait_text(&ann, "Loyalty Tier").as_deref(), Some("gold"));
    assert!(
        trait_text(&ann, "Signed Up").is_none(),
        "the timestamp column is not a trait"
    );
    let address = ann.traits.as_ref().unwrap().fields["address"].clone();
    let Some(prost_types::value::Kind::StructValue(address)) = address.kind else {
        panic!("address is an object");
    };
    assert_eq!(
        address.fields["postal_code"].kind,
        text("SW1A 1AA").kind,
        "postcode goes where fuzzy matching reads it"
    );
    let record = ann
        .trait_records
        .iter()
        .find(|record| record.name == "first_name")
        .unwrap();
    assert_eq!(record.updated_at, at_seconds(1_704_412_800), "2024-01-05");
    let provenance = record.provenance.as_ref().unwrap();
    assert_eq!(provenance.source, "crm-export");
    assert!(provenance.message_id.starts_with("import:"));

    let eve = get_by(&mut client, email("eve@example.com")).await.unwrap();
    assert_eq!(trait_text(&eve, "last_name").as_deref(), Some("Hart, Jr"));
    assert_eq!(
        trait_text(&eve, "Loyalty Tier").as_deref(),
        Some("line one\nline two")
    );

    let rejects_path = summary.rejects_file.clone().expect("a rejects file");
    assert_eq!(rejects_path, dir.path().join("customers.csv.rejects.csv"));
    let mut rejects = csv::Reader::from_path(&rejects_path).unwrap();
    let header: Vec<String> = rejects
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header.first().map(String::as_str), Some("Email"));
    assert_eq!(
        header[header.len() - 2..],
        ["reject_line".to_owned(), "reject_reason".to_owned()]
    );
    let mut rows: Vec<(String, String, String)> = rejects
        .records()
        .map(|record| {
            let record = record.unwrap();
            let field = |i: usize| record.get(i).unwrap().to_owned();
            (field(3), field(9), field(10))
        })
        .collect();
    rows.sort();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("Cat", "4"));
    assert!(
        rows[0].2.starts_with("identify.identifiers[0].value"),
        "{rows:?}"
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2.as_str()),
        ("Dan", "5", "no identifier in the row")
    );
    assert_eq!((rows[2].0.as_str(), rows[2].1.as_str()), ("Fay", "8"));
    assert!(rows[2].2.contains("timestamp"), "{rows:?}");

    // A rerun (after an interruption, say) adds nothing.
    let rerun = sightline::import::run(&options(&server, &file))
        .await
        .unwrap();
    assert_eq!(counts(&rerun), (6, 0, 3, 3), "{rerun:?}");
    let ann_again = get_by(&mut client, email("ann@example.com")).await.unwrap();
    assert_eq!(ann_again.trait_records, ann.trait_records);
}

#[tokio::test]
async fn an_unreadable_mapping_stops_before_anything_is_sent() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.csv");
    std::fs::write(&file, "note,colour\nhello,blue\n").unwrap();
    let mut options = options(&server, &file);
    options.overrides.clear();
    options.timestamp_column = None;
    let error = sightline::import::run(&options).await.unwrap_err();
    assert!(error.to_string().contains("identifier"), "{error}");

    options.overrides = vec!["note=identifier:user_id".parse().unwrap()];
    let summary = sightline::import::run(&options).await.unwrap();
    assert_eq!(counts(&summary), (1, 1, 0, 0));
    assert_eq!(summary.rejects_file, None);
    let profile = get_by(&mut client, user("hello")).await.unwrap();
    assert_eq!(trait_text(&profile, "colour").as_deref(), Some("blue"));
}
