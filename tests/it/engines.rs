//! The suite runs on one engine per run: sled by default, PostgreSQL when
//! `SIGHTLINE_TEST_POSTGRES` names a server (`scripts/test-postgres`).

use std::io::Write;

use std::time::Duration;

use sightline::api::pb::{
    self, erase_subject_request, privacy_service_client::PrivacyServiceClient,
    segment_service_client::SegmentServiceClient,
};
use tonic::transport::Channel;

use crate::support::{
    self, TestServer, email, get_by, get_by_id, identify, phone, text, traits, user,
};

/// Says which half of the suite ran, past the test harness's capture of
/// `println!`, so that a run without PostgreSQL says what it skipped; and
/// checks that the data went where the suite says it runs.
#[tokio::test]
async fn the_suite_runs_on_the_engine_it_names() {
    let on_postgres = support::postgres_server().is_some();
    let notice = if on_postgres {
        "engine: PostgreSQL (SIGHTLINE_TEST_POSTGRES)\n"
    } else {
        "engine: sled; the PostgreSQL half was skipped (run scripts/test-postgres, or set SIGHTLINE_TEST_POSTGRES)\n"
    };
    let _ = std::io::stderr().write_all(notice.as_bytes());

    let server = TestServer::start().await;
    let mut client = server.client().await;
    client
        .identify(identify(vec![email("engine@example.com")]))
        .await
        .expect("identify");
    let data_dir = server.stop().await;

    assert!(
        !support::stored_pairs(data_dir.path()).is_empty(),
        "the engine holds the profile"
    );
    let sled_files = std::fs::read_dir(data_dir.path())
        .expect("data directory")
        .filter_map(Result::ok)
        .any(|entry| entry.file_name() == "db" || entry.file_name() == "conf");
    assert_eq!(
        sled_files, !on_postgres,
        "sled's files are in the data directory exactly when the suite runs on sled"
    );
}

/// Two servers on one PostgreSQL database (each with a data directory of
/// its own); `None` when the suite runs on sled, which one process owns.
async fn two_servers_on_one_database() -> Option<(TestServer, TestServer)> {
    support::postgres_server()?;
    let configure = |data_dir: &tempfile::TempDir| {
        let mut config = support::test_config(data_dir);
        // Concurrency, not merge protection, is under test here.
        config
            .identity
            .merge
            .identifiers_per_kind_max
            .insert("user_id".to_owned(), 1_000);
        config
    };
    let first_dir = tempfile::tempdir().expect("data dir");
    let first_config = configure(&first_dir);
    let second_dir = tempfile::tempdir().expect("data dir");
    let mut second_config = configure(&second_dir);
    second_config.storage.url = first_config.storage.url.clone();
    let first = TestServer::start_with(first_dir, first_config).await;
    let second = TestServer::start_with(second_dir, second_config).await;
    Some((first, second))
}

#[tokio::test]
async fn chain_links_split_between_two_servers_end_in_one_profile() {
    let Some((first, second)) = two_servers_on_one_database().await else {
        return;
    };
    const LINKS: usize = 200;
    let clients = [first.client().await, second.client().await];
    let calls = (0..LINKS).map(|i| {
        let mut client = clients[i % 2].clone();
        tokio::spawn(async move {
            client
                .identify(identify(vec![
                    user(&format!("u{i}")),
                    user(&format!("u{}", i + 1)),
                ]))
                .await
                .map(|response| response.into_inner())
        })
    });
    for call in futures::future::join_all(calls).await {
        call.expect("task").expect("identify");
    }

    for mut client in clients {
        let survivor = get_by(&mut client, user("u0")).await.expect("u0");
        assert_eq!(survivor.identifiers.len(), LINKS + 1);
        for i in 0..=LINKS {
            let profile = get_by(&mut client, user(&format!("u{i}")))
                .await
                .expect("linked");
            assert_eq!(profile.profile_id, survivor.profile_id, "u{i}");
        }
        for merged in &survivor.merged_profile_ids {
            let profile = get_by_id(&mut client, merged).await.expect("alias");
            assert_eq!(profile.profile_id, survivor.profile_id, "alias {merged}");
        }
    }
}

#[tokio::test]
async fn profiles_created_through_two_servers_get_distinct_ids() {
    let Some((first, second)) = two_servers_on_one_database().await else {
        return;
    };
    let clients = [first.client().await, second.client().await];
    let calls = (0..100).map(|i| {
        let mut client = clients[i % 2].clone();
        tokio::spawn(async move {
            client
                .identify(identify(vec![email(&format!("person{i}@example.com"))]))
                .await
                .map(|response| response.into_inner().profile_id)
        })
    });
    let mut ids = std::collections::BTreeSet::new();
    for call in futures::future::join_all(calls).await {
        ids.insert(call.expect("task").expect("identify"));
    }
    assert_eq!(ids.len(), 100, "every new profile has an id of its own");
}

#[tokio::test]
async fn an_erasure_through_one_server_suppresses_writes_through_the_other() {
    let Some((first, second)) = two_servers_on_one_database().await else {
        return;
    };
    let mut through_first = first.client().await;
    let mut through_second = second.client().await;
    through_first
        .identify(identify(vec![
            email("erased@example.com"),
            phone("+447911123456"),
        ]))
        .await
        .expect("identify");
    // Read once through the second server, so that nothing it might
    // remember of the person can excuse a stale answer later.
    get_by(&mut through_second, email("erased@example.com"))
        .await
        .expect("visible through the other server");

    let mut privacy = PrivacyServiceClient::new(first.channel().await);
    let erased = privacy
        .erase_subject(pb::EraseSubjectRequest {
            lookup: Some(erase_subject_request::Lookup::Identifier(email(
                "erased@example.com",
            ))),
            request_id: "erasure-across-servers".to_owned(),
            requester: "compliance".to_owned(),
            reason: "Art. 17 request".to_owned(),
            skip_suppression: false,
        })
        .await
        .expect("erase")
        .into_inner();
    assert!(erased.erased);

    assert_eq!(
        get_by(&mut through_second, email("erased@example.com"))
            .await
            .expect_err("gone through the other server too")
            .code(),
        tonic::Code::NotFound
    );
    let replay = through_second
        .identify(identify(vec![
            email("erased@example.com"),
            email("new-address@example.com"),
        ]))
        .await
        .expect("dropped, not refused")
        .into_inner();
    assert!(replay.suppressed, "the other server suppresses the person");
    assert!(replay.profile_id.is_empty());
}

/// Two servers creating profiles at once conflict on shared keys (block
/// lists, name counts, id reservations) and run groups again, sometimes
/// with ids of another block; no data key made for an abandoned id may
/// end up sealing, or overwriting the key of, another server's profile.
#[tokio::test]
async fn profiles_written_through_two_servers_at_once_stay_readable_through_both() {
    let Some((first, second)) = two_servers_on_one_database().await else {
        return;
    };
    const PEOPLE: usize = 400;
    let people = |server: usize| {
        (0..PEOPLE)
            .filter(move |person| person % 2 == server)
            .map(|person| {
                let mut request = identify(vec![email(&format!("shared{person}@example.com"))]);
                request.traits = traits(&[
                    ("first_name", text(["Ann", "Bob", "Cy"][person % 3])),
                    ("last_name", text(["Lee", "Roe"][person % 2])),
                    ("birthday", text(&format!("1980-01-{:02}", person % 28 + 1))),
                ]);
                pb::IngestRequest {
                    item: Some(pb::ingest_request::Item::Identify(request)),
                }
            })
    };
    let (mut client_first, mut client_second) = (first.client().await, second.client().await);
    let (through_first, through_second) = tokio::join!(
        client_first.ingest(futures::stream::iter(people(0).collect::<Vec<_>>())),
        client_second.ingest(futures::stream::iter(people(1).collect::<Vec<_>>())),
    );
    for summary in [through_first, through_second] {
        let summary = summary.expect("ingest").into_inner();
        assert_eq!(summary.rejected, 0, "{:?}", summary.errors.first());
    }
    for server in [&first, &second] {
        let mut client = server.client().await;
        for person in 0..PEOPLE {
            let who = email(&format!("shared{person}@example.com"));
            let status = get_by(&mut client, who).await.err();
            assert!(status.is_none(), "person {person}: {status:?}");
        }
    }
}

/// How long another server may take to learn of a definition or a
/// membership change (`docs/architecture.md`: within a second; a hang
/// guard here).
const ACROSS_SERVERS: Duration = Duration::from_secs(10);

/// Polls `probe` until it holds, or fails after [`ACROSS_SERVERS`].
async fn within_bound<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + ACROSS_SERVERS;
    while !probe().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of a segment's members (holdouts left out).
async fn listed(segments: &mut SegmentServiceClient<Channel>, id: &str) -> Vec<String> {
    let members = support::members(segments, id, false).await;
    members.into_iter().map(|(profile, _)| profile).collect()
}

/// The ids of the segments a profile is in.
async fn checked(segments: &mut SegmentServiceClient<Channel>, who: pb::Identifier) -> Vec<String> {
    let memberships = support::memberships(segments, who).await;
    memberships
        .into_iter()
        .map(|(segment, _)| segment)
        .collect()
}

#[tokio::test]
async fn segments_and_memberships_agree_across_two_servers() {
    let Some((first, second)) = two_servers_on_one_database().await else {
        return;
    };
    let mut segments_first = SegmentServiceClient::new(first.channel().await);
    let mut segments_second = SegmentServiceClient::new(second.channel().await);
    let mut through_second = second.client().await;
    segments_first
        .put_segment(pb::PutSegmentRequest {
            segment: Some(pb::Segment {
                id: "gold".to_owned(),
                name: "gold".to_owned(),
                rule: r#"profile.traits.plan == "gold""#.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .expect("define through the first server");
    within_bound("the second server knows the segment", || {
        let mut segments = segments_second.clone();
        async move {
            segments
                .get_segment(pb::GetSegmentRequest {
                    id: "gold".to_owned(),
                })
                .await
                .is_ok()
        }
    })
    .await;
    let mut watch = segments_first
        .watch_membership(pb::WatchMembershipRequest {
            segment_ids: vec!["gold".to_owned()],
        })
        .await
        .expect("watch through the first server")
        .into_inner();

    let who = email("gold@example.com");
    let mut request = identify(vec![who.clone()]);
    request.traits = traits(&[("plan", text("gold"))]);
    let profile_id = through_second
        .identify(request)
        .await
        .expect("identify through the second server")
        .into_inner()
        .profile_id;
    // The write's own server evaluated the rule it learnt from the other.
    for segments in [&mut segments_second, &mut segments_first] {
        assert_eq!(checked(segments, who.clone()).await, ["gold"]);
    }
    assert_eq!(
        listed(&mut segments_second, "gold").await,
        std::slice::from_ref(&profile_id)
    );
    within_bound("the first server lists the member", || {
        let mut segments = segments_first.clone();
        let profile_id = profile_id.clone();
        async move { listed(&mut segments, "gold").await == [profile_id] }
    })
    .await;
    let entered = tokio::time::timeout(ACROSS_SERVERS, watch.message())
        .await
        .expect("the first server's watcher hears of the change")
        .expect("stream healthy")
        .expect("stream open");
    assert_eq!(entered.profile_id, profile_id);
    assert_eq!(entered.kind, pb::membership_change::Kind::Entered as i32);

    let mut request = identify(vec![who.clone()]);
    request.traits = traits(&[("plan", text("silver"))]);
    through_second.identify(request).await.expect("downgrade");
    let exited = tokio::time::timeout(ACROSS_SERVERS, watch.message())
        .await
        .expect("the first server's watcher hears of the exit")
        .expect("stream healthy")
        .expect("stream open");
    assert_eq!(exited.kind, pb::membership_change::Kind::Exited as i32);
    assert!(listed(&mut segments_first, "gold").await.is_empty());
    assert!(checked(&mut segments_first, who).await.is_empty());
}

/// TLS to the database when the URL asks for it: against a cluster that
/// takes TLS connections only, the server serves with the CA file and
/// refuses to start without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_reached_over_tls_when_the_url_asks_for_it() {
    let Some((cluster, ca)) = tokio::task::block_in_place(support::PrivateCluster::start_tls_only)
    else {
        return;
    };
    let url = format!("{}?sslmode=require", cluster.url());
    // Plain connections are refused by this cluster: what works below
    // went over TLS.
    assert!(
        tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
            .await
            .is_err(),
        "the cluster takes TLS connections only"
    );

    let data_dir = tempfile::tempdir().expect("data dir");
    let mut config = support::test_config(&data_dir);
    config.storage.url = Some(url.clone());
    config.storage.ca_file = Some(ca);
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    client
        .identify(identify(vec![email("tls@example.com")]))
        .await
        .expect("written over TLS");
    get_by(&mut client, email("tls@example.com"))
        .await
        .expect("read over TLS");
    drop(client);
    drop(server.stop().await);

    let mut without_ca = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"));
    without_ca
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--data",
        ])
        .arg(tempfile::tempdir().expect("data dir").path());
    let output = tokio::task::block_in_place(|| without_ca.output()).expect("run sightline");
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "no start without a CA file");
    assert!(
        printed.contains("ca_file"),
        "says what is missing: {printed}"
    );
}
