//! Subject-access export and erasure through the API, down to a scan of
//! every key and value left in the database.

use std::path::Path;
use std::time::Duration;

use sightline::api::pb::{
    self, erase_subject_request, export_subject_request,
    privacy_service_client::PrivacyServiceClient, segment_service_client::SegmentServiceClient,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

type Privacy = PrivacyServiceClient<Channel>;

const EMAIL: &str = "zebediah.quillfeather@example.com";
const WORK_EMAIL: &str = "z.quillfeather@work.example";
const PHONE: &str = "+447911123999";
const DEVICE: &str = "device-7f3a9c1e";
const FIRST_NAME: &str = "Zebediah";
const LAST_NAME: &str = "Quillfeather";
const STREET: &str = "17 Marrowbone Lane";
const PRODUCT: &str = "Heliotrope Umbrella";

/// A person built from three profiles that a later call merged, with
/// orders, consents and two segment memberships.
async fn build_person(server: &TestServer) {
    let mut client = server.client().await;
    let mut segments = SegmentServiceClient::new(server.channel().await);
    for (id, rule) in [
        ("buyers", "profile.computed.frequency >= 2"),
        ("emailable", r#""email" in profile.consent.marketing"#),
    ] {
        segments
            .put_segment(pb::PutSegmentRequest {
                segment: Some(pb::Segment {
                    id: id.to_owned(),
                    name: id.to_owned(),
                    rule: rule.to_owned(),
                    ..Default::default()
                }),
            })
            .await
            .expect("put segment");
    }
    let mut first = identify(vec![email(EMAIL)]);
    first.traits = traits(&[
        ("first_name", text(FIRST_NAME)),
        ("last_name", text(LAST_NAME)),
        ("address", {
            let fields = [("street", text(STREET))]
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                    fields,
                })),
            }
        }),
    ]);
    first.message_id = "crm-1".to_owned();
    client.identify(first).await.expect("first profile");
    client
        .identify(identify(vec![phone(PHONE), id("device_id", DEVICE)]))
        .await
        .expect("second profile");
    client
        .identify(identify(vec![email(WORK_EMAIL)]))
        .await
        .expect("third profile");
    for (who, revenue) in [(email(WORK_EMAIL), 120.0), (phone(PHONE), 80.0)] {
        let mut order = track(vec![who], "Order Completed");
        order.properties = Some(prost_types::Struct {
            fields: [
                ("revenue".to_owned(), number(revenue)),
                ("product".to_owned(), text(PRODUCT)),
            ]
            .into_iter()
            .collect(),
        });
        client.track(order).await.expect("order");
    }
    let merged = client
        .identify(identify(vec![
            email(EMAIL),
            phone(PHONE),
            email(WORK_EMAIL),
        ]))
        .await
        .expect("merge")
        .into_inner();
    assert_eq!(merged.merged_profile_ids.len(), 2);
    client
        .update_consent(pb::UpdateConsentRequest {
            lookup: Some(pb::update_consent_request::Lookup::Identifier(email(EMAIL))),
            changes: vec![pb::ConsentChange {
                channel: "email".to_owned(),
                purpose: "marketing".to_owned(),
                state: pb::ConsentState::Granted as i32,
            }],
            ..Default::default()
        })
        .await
        .expect("consent");
}

async fn export(
    privacy: &mut Privacy,
    who: pb::Identifier,
) -> Result<serde_json::Value, tonic::Status> {
    let mut stream = privacy
        .export_subject(pb::ExportSubjectRequest {
            lookup: Some(export_subject_request::Lookup::Identifier(who)),
            requester: "data-team".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut document = Vec::new();
    while let Some(chunk) = stream.message().await? {
        document.extend(chunk.data);
    }
    Ok(serde_json::from_slice(&document).expect("the export is JSON"))
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/subject-export.schema.json"),
    )
    .expect("schema file");
    jsonschema::validator_for(&serde_json::from_str(&text).expect("schema is JSON"))
        .expect("schema compiles")
}

#[tokio::test]
async fn an_export_holds_everything_and_validates_against_the_schema() {
    let server = TestServer::start().await;
    build_person(&server).await;
    let mut client = server.client().await;
    get_by(&mut client, phone(PHONE))
        .await
        .expect("a read to log");
    let mut privacy = PrivacyServiceClient::new(server.channel().await);

    // Reads are logged in the background; wait for the one above.
    let mut document = serde_json::Value::Null;
    for _ in 0..500 {
        document = export(&mut privacy, email(EMAIL)).await.expect("export");
        if document["profile"]["access_log"]
            .as_array()
            .is_some_and(|log| !log.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let validator = schema();
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let profile = &document["profile"];
    let identifiers: Vec<&str> = profile["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|identifier| identifier["value"].as_str().unwrap())
        .collect();
    for expected in [EMAIL, WORK_EMAIL, PHONE, DEVICE] {
        assert!(
            identifiers.contains(&expected),
            "{expected} in {identifiers:?}"
        );
    }
    assert_eq!(profile["traits"]["first_name"], FIRST_NAME);
    assert_eq!(profile["merged_profile_ids"].as_array().unwrap().len(), 2);
    assert_eq!(profile["events"].as_array().unwrap().len(), 2);
    assert_eq!(profile["computed"]["frequency"], 2);
    assert_eq!(profile["computed"]["lifetime_value"], 200.0);
    assert_eq!(profile["consent"][0]["channel"], "email");
    assert!(!profile["consent_history"].as_array().unwrap().is_empty());
    let segments: Vec<&str> = profile["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|segment| segment["segment_id"].as_str().unwrap())
        .collect();
    assert_eq!(segments, ["buyers", "emailable"]);
    let merges = profile["merge_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["kind"] == "merge")
        .count();
    assert!(merges >= 1);
    assert_eq!(profile["access_log"][0]["method"], "GetProfile");
    assert!(
        !document["processing"]["purposes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(document["schema_version"], "sightline.subject-export/2");

    let requests = privacy
        .list_privacy_requests(pb::ListPrivacyRequestsRequest {
            kind: pb::PrivacyRequestKind::Export as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r.status == pb::PrivacyRequestStatus::Completed as i32)
    );
}

/// Every key and value of every tree, searched for the person's data.
fn traces_in_database(data_dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (key, value) in stored_pairs(data_dir) {
        for needle in needles {
            let needle = needle.as_bytes();
            let contains = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            if contains(&key) || contains(&value) {
                found.push(format!(
                    "{} in a record whose key starts with {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&key[..key.len().min(12)])
                ));
            }
        }
    }
    found
}

/// The profile numbers the access log holds entries under (key: `l`, the
/// profile number big-endian, time, sequence).
fn access_log_profiles(data_dir: &Path) -> Vec<u64> {
    stored_pairs(data_dir)
        .into_iter()
        .filter(|(key, _)| key.first() == Some(&b'l'))
        .filter_map(|(key, _)| {
            key.get(1..9)
                .and_then(|number| number.try_into().ok())
                .map(u64::from_be_bytes)
        })
        .collect()
}

const NEEDLES: [&str; 9] = [
    EMAIL,
    WORK_EMAIL,
    PHONE,
    DEVICE,
    FIRST_NAME,
    LAST_NAME,
    STREET,
    PRODUCT,
    "quillfeather",
];

async fn erase(
    privacy: &mut Privacy,
    who: pb::Identifier,
    request_id: &str,
    suppress: bool,
) -> pb::EraseSubjectResponse {
    privacy
        .erase_subject(pb::EraseSubjectRequest {
            lookup: Some(erase_subject_request::Lookup::Identifier(who)),
            request_id: request_id.to_owned(),
            requester: "compliance".to_owned(),
            reason: "Art. 17 request".to_owned(),
            skip_suppression: !suppress,
        })
        .await
        .expect("erase")
        .into_inner()
}

#[tokio::test]
async fn erasure_leaves_no_trace_and_suppression_keeps_the_person_out() {
    let server = TestServer::start().await;
    build_person(&server).await;
    let mut client = server.client().await;
    let profile = get_by(&mut client, email(EMAIL)).await.expect("person");
    let mut profile_ids = vec![profile.profile_id.clone()];
    profile_ids.extend(profile.merged_profile_ids.clone());
    // A second, unrelated person must be untouched.
    client
        .identify(identify(vec![email("bystander@example.com")]))
        .await
        .unwrap();
    let mut privacy = PrivacyServiceClient::new(server.channel().await);
    let mut segments = SegmentServiceClient::new(server.channel().await);

    let erased = erase(&mut privacy, phone(PHONE), "erasure-1", true).await;
    assert!(erased.erased);
    let counts = erased.counts.expect("counts");
    // The person's profile and each one merged into it.
    assert!(profile_ids.len() > 1, "the person was merged from several");
    assert_eq!(counts.profiles, profile_ids.len() as u64);
    assert_eq!(counts.identifiers, 4);
    assert_eq!(counts.events, 2);
    assert_eq!(counts.memberships, 2);
    assert_eq!(counts.suppressed_identifiers, 4);

    for who in [
        email(EMAIL),
        email(WORK_EMAIL),
        phone(PHONE),
        id("device_id", DEVICE),
    ] {
        let status = get_by(&mut client, who).await.expect_err("erased");
        assert_eq!(status.code(), Code::NotFound);
        assert!(!status.message().contains('@'), "{}", status.message());
    }
    for profile_id in &profile_ids {
        let status = get_by_id(&mut client, profile_id)
            .await
            .expect_err("erased");
        assert_eq!(status.code(), Code::NotFound);
    }
    for segment in ["buyers", "emailable"] {
        let mut listed = segments
            .list_members(pb::ListMembersRequest {
                segment_id: segment.to_owned(),
                include_holdout: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(member) = listed.message().await.unwrap() {
            assert!(!profile_ids.contains(&member.profile_id));
        }
    }

    // Idempotent: a second request finds nothing left and still succeeds.
    let again = erase(&mut privacy, email(EMAIL), "erasure-2", true).await;
    assert!(!again.erased);
    // The same request id answers with the first outcome.
    let repeated = erase(&mut privacy, email(EMAIL), "erasure-1", true).await;
    assert!(repeated.erased);

    // Suppressed: an old event replayed creates nobody.
    for who in [email(EMAIL), phone(PHONE)] {
        let mut replay = track(
            vec![who.clone(), email("new-address@example.com")],
            "Order Completed",
        );
        replay.message_id = "replayed-later".to_owned();
        let response = client
            .track(replay)
            .await
            .expect("dropped, not refused")
            .into_inner();
        assert!(response.suppressed);
        assert!(response.profile_id.is_empty());
        assert_eq!(
            get_by(&mut client, who).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    assert_eq!(
        get_by(&mut client, email("new-address@example.com"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    get_by(&mut client, email("bystander@example.com"))
        .await
        .expect("bystander untouched");

    let requests = privacy
        .list_privacy_requests(pb::ListPrivacyRequestsRequest {
            kind: pb::PrivacyRequestKind::Erasure as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    let first = requests
        .iter()
        .find(|request| request.request_id == "erasure-1")
        .expect("the request record");
    assert_eq!(first.counts.as_ref().map(|c| c.events), Some(2));
    assert_eq!(first.requester, "compliance");
    assert!(first.completed_at.is_some() && !first.overdue);

    let data_dir = server.stop().await;
    let traces = traces_in_database(data_dir.path(), &NEEDLES);
    assert!(traces.is_empty(), "{traces:#?}");
    // The read just before the erasure was logged in the background, maybe
    // after it: no access-log entry of the person may be left either way.
    let logged = access_log_profiles(data_dir.path());
    for profile_id in &profile_ids {
        let number: u64 = profile_id[1..].parse().expect("p<number>");
        assert!(!logged.contains(&number), "access log of {profile_id}");
    }
    // The scan does find data that is there, once opened with the key
    // store, and never in plain bytes.
    assert!(traces_in_database(data_dir.path(), &["bystander@example.com"]).is_empty());
    let needle = b"bystander@example.com";
    assert!(
        opened_pairs(data_dir.path())
            .iter()
            .any(|(_, value)| value.windows(needle.len()).any(|w| w == needle))
    );
}

#[tokio::test]
async fn erasure_without_suppression_lets_the_person_start_afresh() {
    let server = TestServer::start().await;
    build_person(&server).await;
    let mut privacy = PrivacyServiceClient::new(server.channel().await);
    let erased = erase(&mut privacy, email(EMAIL), "erasure-plain", false).await;
    assert!(erased.erased);
    assert_eq!(erased.counts.unwrap().suppressed_identifiers, 0);

    let mut client = server.client().await;
    let response = client
        .identify(identify(vec![email(EMAIL)]))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.suppressed);
    assert_eq!(response.outcome, pb::ResolutionOutcome::Created as i32);
    let fresh = get_by(&mut client, email(EMAIL)).await.unwrap();
    assert!(fresh.traits.is_none_or(|traits| traits.fields.is_empty()));
    assert_eq!(fresh.event_count, 0);
    assert_eq!(fresh.identifiers.len(), 1);
    assert!(fresh.journal.is_empty());
    assert!(fresh.merged_profile_ids.is_empty());

    let data_dir = server.stop().await;
    let traces = traces_in_database(
        data_dir.path(),
        &[WORK_EMAIL, PHONE, DEVICE, FIRST_NAME, STREET, PRODUCT],
    );
    assert!(traces.is_empty(), "{traces:#?}");
}

#[tokio::test]
async fn privacy_errors_do_not_echo_identifiers() {
    let server = TestServer::start().await;
    let mut privacy = PrivacyServiceClient::new(server.channel().await);
    let status = export(&mut privacy, email("unknown.person@example.com"))
        .await
        .expect_err("nobody to export");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        !status.message().contains("unknown.person"),
        "{}",
        status.message()
    );
    let status = export(&mut privacy, phone("+44 not a number 42"))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        !status.message().contains("not a number"),
        "{}",
        status.message()
    );
    // Erasing someone never held succeeds with nothing erased.
    let response = erase(&mut privacy, email("never.held@example.com"), "", true).await;
    assert!(!response.erased);
    assert!(response.request_id.starts_with("req-"));
}

/// Many events make the erasure take long enough for the kill to land
/// inside it on some attempts.
const CRASH_EVENTS: usize = 3000;

#[tokio::test]
async fn a_crash_during_erasure_leaves_the_whole_person_or_no_trace() {
    // `None`: killed once the erasure is answered, however long it takes.
    let delays_ms = [
        Some(0u64),
        Some(1),
        Some(2),
        Some(3),
        Some(5),
        Some(8),
        Some(12),
        Some(20),
        None,
    ];
    let (mut kept, mut erased) = (0, 0);
    // Kills that came after the request was sent and before its answer.
    let mut open_at_kill = 0;
    for delay in delays_ms {
        let data_dir = tempfile::tempdir().unwrap();
        let (mut child, port) = spawn_binary(data_dir.path());
        let mut client = connect_port(port).await;
        let mut first = identify(vec![email(EMAIL), phone(PHONE)]);
        first.traits = traits(&[("first_name", text(FIRST_NAME))]);
        client.identify(first).await.unwrap();
        let items: Vec<pb::IngestRequest> = (0..CRASH_EVENTS)
            .map(|n| {
                let mut view = track(vec![email(EMAIL)], "Product Viewed");
                view.properties = traits(&[("product", text(PRODUCT))]);
                view.message_id = format!("view-{n}");
                pb::IngestRequest {
                    item: Some(pb::ingest_request::Item::Track(view)),
                }
            })
            .collect();
        client.ingest(futures::stream::iter(items)).await.unwrap();

        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut privacy = PrivacyServiceClient::new(channel);
        let erasure = tokio::spawn(async move {
            privacy
                .erase_subject(pb::EraseSubjectRequest {
                    lookup: Some(erase_subject_request::Lookup::Identifier(email(EMAIL))),
                    requester: "compliance".to_owned(),
                    ..Default::default()
                })
                .await
        });
        match delay {
            Some(delay) => tokio::time::sleep(Duration::from_millis(delay)).await,
            None => {
                for _ in 0..6_000 {
                    if erasure.is_finished() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        let answered_before_kill = erasure.is_finished();
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let acknowledged = erasure.await.expect("task").is_ok();
        if delay.is_some_and(|delay| delay > 0) && !answered_before_kill && !acknowledged {
            open_at_kill += 1;
        }

        let (mut child, port) = spawn_binary(data_dir.path());
        let mut client = connect_port(port).await;
        let gone = match get_by(&mut client, phone(PHONE)).await {
            Ok(profile) => {
                assert!(!acknowledged, "an acknowledged erasure was undone");
                assert_eq!(profile.event_count as usize, CRASH_EVENTS);
                assert_eq!(profile.identifiers.len(), 2);
                kept += 1;
                false
            }
            Err(status) => {
                assert_eq!(status.code(), Code::NotFound);
                assert_eq!(
                    get_by(&mut client, email(EMAIL)).await.unwrap_err().code(),
                    Code::NotFound
                );
                erased += 1;
                true
            }
        };
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        if gone {
            let traces = traces_in_database(data_dir.path(), &[EMAIL, PHONE, FIRST_NAME, PRODUCT]);
            assert!(traces.is_empty(), "{traces:#?}");
        }
    }
    assert_eq!(kept + erased, delays_ms.len());
    assert!(
        open_at_kill > 0,
        "no kill landed while an erasure was in flight ({kept} kept, {erased} erased)"
    );
    assert!(
        erased > 0,
        "no erasure finished before its kill: the gone side was not checked"
    );
    println!("erasure crash: {open_at_kill} kills mid-erasure, {kept} kept, {erased} erased");
}

fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(args)
        .output()
        .expect("run the sightline binary")
}

#[tokio::test]
async fn the_command_line_exports_and_erases() {
    let server = TestServer::start().await;
    build_person(&server).await;
    let address = format!("http://{}", server.address);
    let exported = {
        let address = address.clone();
        tokio::task::spawn_blocking(move || {
            run_cli(&[
                "export",
                "--server",
                &address,
                "--identifier",
                &format!("email:{EMAIL}"),
            ])
        })
        .await
        .unwrap()
    };
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let document: serde_json::Value =
        serde_json::from_slice(&exported.stdout).expect("JSON on stdout");
    assert_eq!(document["profile"]["traits"]["last_name"], LAST_NAME);

    let erased = tokio::task::spawn_blocking(move || {
        run_cli(&[
            "erase",
            "--server",
            &address,
            "--identifier",
            &format!("phone:{PHONE}"),
            "--reason",
            "customer request",
            "--request-id",
            "cli-erasure",
        ])
    })
    .await
    .unwrap();
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&erased.stdout).expect("JSON on stdout");
    assert_eq!(answer["erased"], true);
    assert_eq!(answer["request_id"], "cli-erasure");
    let mut client = server.client().await;
    assert_eq!(
        get_by(&mut client, email(EMAIL)).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn maintenance_applies_access_log_retention_without_a_sweep() {
    let clock = std::sync::Arc::new(sightline::model::ManualClock::new(
        sightline::model::UnixMillis(1_767_225_600_000),
    ));
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.segments.sweep_interval_secs = 0;
    config.privacy.access_log_retention_days = 1;
    let server = TestServer::start_with_clock(data_dir, config, clock.clone()).await;
    let mut client = server.client().await;
    let who = email("kept-a-day@example.com");
    client.identify(identify(vec![who.clone()])).await.unwrap();
    get_by(&mut client, who.clone())
        .await
        .expect("a read to log");
    let mut privacy = PrivacyServiceClient::new(server.channel().await);
    let logged_reads = |document: &serde_json::Value| {
        document["profile"]["access_log"]
            .as_array()
            .map_or(0, |log| {
                log.iter()
                    .filter(|entry| entry["method"] == "GetProfile")
                    .count()
            })
    };
    let mut logged = 0;
    for _ in 0..500 {
        logged = logged_reads(&export(&mut privacy, who.clone()).await.expect("export"));
        if logged > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(logged, 1, "the read is logged");

    clock.advance_days(2);
    let report = client
        .run_maintenance(pb::RunMaintenanceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.access_entries_removed >= 1, "{report:?}");
    let document = export(&mut privacy, who).await.expect("export");
    assert_eq!(logged_reads(&document), 0, "{document:#}");
}

#[tokio::test]
async fn a_replay_of_an_erased_persons_own_calls_is_suppressed_never_a_duplicate() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // Three identifies set one trait in turn: the second's value, and so
    // its provenance, is gone before the erasure.
    let mut calls = Vec::new();
    for (n, plan) in ["bronze", "silver", "gold"].into_iter().enumerate() {
        let mut call = identify(vec![email(EMAIL)]);
        call.traits = traits(&[("plan", text(plan))]);
        call.message_id = format!("crm-{n}");
        client.identify(call.clone()).await.unwrap();
        calls.push(call);
    }
    let mut order = track(vec![email(EMAIL)], "Order Completed");
    order.message_id = "order-1".to_owned();
    client.track(order.clone()).await.unwrap();

    let mut privacy = PrivacyServiceClient::new(server.channel().await);
    let erased = erase(&mut privacy, email(EMAIL), "erase-replayed", true).await;
    assert!(erased.erased);
    assert_eq!(
        erased.counts.map(|counts| counts.message_records),
        Some(4),
        "every record of the person's calls goes"
    );
    for call in calls {
        let replay = client.identify(call).await.unwrap().into_inner();
        assert!(replay.suppressed, "{replay:?}");
        assert!(!replay.duplicate, "{replay:?}");
        assert!(replay.profile_id.is_empty(), "{replay:?}");
    }
    let replay = client.track(order).await.unwrap().into_inner();
    assert!(replay.suppressed && !replay.duplicate, "{replay:?}");
    assert_eq!(
        get_by(&mut client, email(EMAIL)).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn after_an_erasure_no_record_of_anyone_else_holds_a_hash_of_the_person() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client
        .identify(identify(vec![user("u-erased"), email(EMAIL)]))
        .await
        .unwrap();
    let bystander = client
        .identify(identify(vec![user("u-bystander")]))
        .await
        .unwrap()
        .into_inner();
    // A call carrying both people's identifiers: the link is refused and
    // the data goes to the bystander, with provenance naming both sides.
    let mut linking = identify(vec![email(EMAIL), user("u-bystander")]);
    linking.traits = traits(&[("plan", text("gold"))]);
    linking.message_id = "link-1".to_owned();
    let linked = client.identify(linking).await.unwrap().into_inner();
    assert_eq!(linked.profile_id, bystander.profile_id);
    assert_eq!(linked.outcome(), pb::ResolutionOutcome::Blocked);
    let mut event = track(vec![email(EMAIL), user("u-bystander")], "Page Viewed");
    event.message_id = "link-2".to_owned();
    client.track(event).await.unwrap();

    let mut privacy = PrivacyServiceClient::new(server.channel().await);
    assert!(
        erase(&mut privacy, user("u-erased"), "erase-linked", true)
            .await
            .erased
    );
    let kept = get_by(&mut client, user("u-bystander")).await.unwrap();
    assert_eq!(kept.traits.unwrap().fields["plan"], text("gold"));
    let data_dir = server.stop().await;

    let opened = opened_pairs(data_dir.path());
    let hashes = [
        ("email", provenance_hash(data_dir.path(), "email", EMAIL)),
        (
            "user_id",
            provenance_hash(data_dir.path(), "user_id", "u-erased"),
        ),
    ];
    let control = provenance_hash(data_dir.path(), "user_id", "u-bystander");
    let holds = |needle: &[u8; 8]| {
        opened
            .iter()
            .filter(|(_, value)| value.windows(8).any(|window| window == needle))
            .count()
    };
    // The search can find a hash: the bystander's own is there.
    assert!(holds(&control) > 0, "the bystander's own hash is stored");
    for (kind, hash) in &hashes {
        assert_eq!(
            holds(hash),
            0,
            "a record still holds the erased {kind}'s hash"
        );
    }
}

#[tokio::test]
async fn every_answer_naming_a_person_is_in_their_access_log() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.identify(identify(vec![email(EMAIL)])).await.unwrap();
    let mut segments = SegmentServiceClient::new(server.channel().await);
    segments
        .put_segment(pb::PutSegmentRequest {
            segment: Some(pb::Segment {
                id: "everyone".to_owned(),
                name: "everyone".to_owned(),
                rule: "true".to_owned(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // The segment's first evaluation runs in the background, and the
    // member list may trail the profile's own membership record by one
    // commit: wait until both name the person.
    let mut listed = 0;
    for _ in 0..500 {
        let check = segments
            .check_membership(pb::CheckMembershipRequest {
                lookup: Some(pb::check_membership_request::Lookup::Identifier(email(
                    EMAIL,
                ))),
            })
            .await
            .unwrap()
            .into_inner();
        let mut members = segments
            .list_members(pb::ListMembersRequest {
                segment_id: "everyone".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        listed = 0;
        while members.message().await.unwrap().is_some() {
            listed += 1;
        }
        if !check.memberships.is_empty() && listed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed, 1);
    let mut privacy = PrivacyServiceClient::new(server.channel().await);
    export(&mut privacy, email(EMAIL)).await.unwrap();

    // Reads are logged in the background.
    let expected = ["CheckMembership", "ListMembers", "ExportSubject"];
    let mut methods = Vec::new();
    for _ in 0..500 {
        let document = export(&mut privacy, email(EMAIL)).await.unwrap();
        methods = document["profile"]["access_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["method"].as_str().unwrap().to_owned())
            .collect();
        if expected
            .iter()
            .all(|method| methods.iter().any(|m| m == method))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for method in expected {
        assert!(
            methods.iter().any(|m| m == method),
            "{method} in {methods:?}"
        );
    }
}
