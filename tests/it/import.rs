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
        types: Vec::new(),
        delimiter: None,
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

#[tokio::test]
async fn spreadsheet_exports_keep_their_numbers_and_a_bad_phone_does_not_cost_the_row() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.csv");
    // A spreadsheet's export: a byte order mark, `;` between fields.
    let text = "\u{feff}Email;Mobile;lifetime_spend;vip;member_code\n\
                gus@example.com;07911 123009;1990.0;true;007\n\
                hal@example.com;not a phone;12.5;false;042\n";
    std::fs::write(&file, text).unwrap();
    let mut import = options(&server, &file);
    import.timestamp_column = None;
    let summary = sightline::import::run(&import).await.unwrap();
    assert_eq!(counts(&summary), (2, 2, 0, 0), "{summary:?}");
    assert_eq!(summary.identifiers_dropped, 1);
    let gus = get_by(&mut client, email("gus@example.com")).await.unwrap();
    let spend = gus.traits.as_ref().unwrap().fields["lifetime_spend"].clone();
    assert_eq!(
        spend.kind,
        Some(prost_types::value::Kind::NumberValue(1990.0))
    );
    assert_eq!(trait_text(&gus, "member_code").as_deref(), Some("007"));
    let hal = get_by(&mut client, email("hal@example.com")).await.unwrap();
    assert_eq!(identifier_values(&hal), ["email:hal@example.com"]);

    // The rejects file names the dropped phone; imported again once fixed,
    // its own columns are ignored and the phone joins the profile.
    let rejects = std::fs::read_to_string(summary.rejects_file.expect("a rejects file")).unwrap();
    assert!(
        rejects.contains("stored without identify.identifiers[1]"),
        "{rejects}"
    );
    let fixed = rejects.replace("not a phone", "07911 123010");
    let fixed_file = dir.path().join("fixed.csv");
    std::fs::write(&fixed_file, fixed).unwrap();
    let mut again = options(&server, &fixed_file);
    again.timestamp_column = None;
    let summary = sightline::import::run(&again).await.unwrap();
    assert_eq!(counts(&summary), (1, 1, 0, 0), "{summary:?}");
    let hal = get_by(&mut client, email("hal@example.com")).await.unwrap();
    assert!(
        !hal.traits
            .as_ref()
            .unwrap()
            .fields
            .contains_key("reject_reason")
    );
    assert_eq!(
        identifier_values(&hal).len(),
        2,
        "{:?}",
        identifier_values(&hal)
    );

    // Declared types win: `vip` as text stays "true".
    let mut typed = options(&server, &file);
    typed.timestamp_column = None;
    typed.types = vec!["vip=text".parse().unwrap()];
    typed.rejects = Some(dir.path().join("typed.rejects.csv"));
    sightline::import::run(&typed).await.unwrap();
    let gus = get_by(&mut client, email("gus@example.com")).await.unwrap();
    assert_eq!(trait_text(&gus, "vip").as_deref(), Some("true"));
}
