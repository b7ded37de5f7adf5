//! Backups taken from a serving server while writes continue, restored
//! offline into a new data directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::path::{Path, PathBuf};

use sightline::api::pb::{
    self, admin_service_client::AdminServiceClient, erase_subject_request,
    privacy_service_client::PrivacyServiceClient,
};
use sightline::identity::MergeRules;
use sightline::store::{ReplayReport, RestoreReport, SledStore, StoreError};
use tempfile::TempDir;

use crate::support::*;

const PEOPLE_BEFORE: usize = 300;

/// Restores as `sightline restore` does with the test configuration.
fn restore(
    backup: &Path,
    data: &Path,
    privacy_from: Option<&Path>,
    keys_from: &Path,
) -> Result<RestoreReport, StoreError> {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = test_config(&scratch);
    config.data_dir = data.to_owned();
    config.storage.url = database_url(data);
    let rules = MergeRules::new(&config.identity.merge, &config.identity.fuzzy);
    let options = sightline::server::store_options(&config, rules).unwrap();
    // On PostgreSQL, a stopped server's data directory stands for its
    // database.
    let source = privacy_from.map(|source| {
        let is_server_dir =
            source.is_dir() && !source.join(sightline::store::BACKUP_FILE_NAME).exists();
        match database_url(source).filter(|_| is_server_dir) {
            Some(url) => sightline::server::privacy_source(&config, url),
            None => sightline::store::PrivacySource::Directory(source.to_owned()),
        }
    });
    let keys = match database_url(keys_from) {
        Some(url) => sightline::server::privacy_source(&config, url),
        None => sightline::store::PrivacySource::Directory(keys_from.to_owned()),
    };
    SledStore::restore(backup, &options, source.as_ref(), Some(&keys))
}

async fn take_backup(server: &TestServer, dir: &Path) {
    AdminServiceClient::new(server.channel().await)
        .backup(pb::BackupRequest {
            directory: dir.display().to_string(),
        })
        .await
        .unwrap();
}

async fn serve_restored(data: PathBuf) -> TestServer {
    let home = tempfile::tempdir().unwrap();
    let mut config = test_config(&home);
    config.storage.url = database_url(&data);
    config.data_dir = data;
    TestServer::start_with(home, config).await
}

const ERASED_EMAIL: &str = "erased@example.com";
const ERASED_PHONE: &str = "07911 123456";
const KEPT_EMAIL: &str = "kept@example.com";

/// A person and a bystander, a backup, then the person's erasure and a
/// second backup. Returns the stopped server's data directory.
async fn erasure_after_a_backup(before: &Path, after: &Path) -> TempDir {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client
        .identify(identify(vec![email(ERASED_EMAIL), phone(ERASED_PHONE)]))
        .await
        .unwrap();
    client
        .track(track(vec![email(ERASED_EMAIL)], "Order Completed"))
        .await
        .unwrap();
    client
        .identify(identify(vec![email(KEPT_EMAIL)]))
        .await
        .unwrap();
    take_backup(&server, before).await;
    PrivacyServiceClient::new(server.channel().await)
        .erase_subject(pb::EraseSubjectRequest {
            lookup: Some(erase_subject_request::Lookup::Identifier(phone(
                ERASED_PHONE,
            ))),
            request_id: "erasure-after-backup".to_owned(),
            requester: "compliance".to_owned(),
            reason: "Art. 17 request".to_owned(),
            skip_suppression: false,
        })
        .await
        .unwrap();
    take_backup(&server, after).await;
    server.stop().await
}

#[tokio::test]
async fn a_restore_re_applies_erasures_made_after_the_backup() {
    let backups = tempfile::tempdir().unwrap();
    let (before, after) = (backups.path().join("before"), backups.path().join("after"));
    let replaced = erasure_after_a_backup(&before, &after).await;
    let restored = tempfile::tempdir().unwrap();

    // Even without a newer copy the person stays erased: their data key is
    // destroyed, and their identifiers are suppressed from the backup's own
    // index.
    let plain = restored.path().join("plain");
    assert_eq!(
        restore(&before, &plain, None, replaced.path())
            .unwrap()
            .replayed,
        None
    );
    let server = serve_restored(plain).await;
    let mut client = server.client().await;
    for who in [email(ERASED_EMAIL), phone(ERASED_PHONE)] {
        let status = get_by(&mut client, who).await.expect_err("stays erased");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    let replayed = client
        .identify(identify(vec![email(ERASED_EMAIL)]))
        .await
        .unwrap()
        .into_inner();
    assert!(replayed.suppressed, "suppressed without --privacy-from");
    get_by(&mut client, email(KEPT_EMAIL))
        .await
        .expect("the bystander is kept");
    server.stop().await;

    // From the replaced data directory and from the newer backup alike.
    for source in [replaced.path(), after.as_path()] {
        let data = restored
            .path()
            .join(format!("from-{}", source.display()).replace('/', "_"));
        let report = restore(&before, &data, Some(source), replaced.path()).unwrap();
        assert_eq!(
            report.replayed,
            Some(ReplayReport {
                profiles_erased: 0,
                suppressions_added: 0,
                requests_added: 1,
            }),
            "the key store already erased the person and suppressed the identifiers; the \
             original request is copied"
        );
        let server = serve_restored(data).await;
        let mut client = server.client().await;
        for who in [email(ERASED_EMAIL), phone(ERASED_PHONE)] {
            let status = get_by(&mut client, who).await.expect_err("erased again");
            assert_eq!(status.code(), tonic::Code::NotFound);
        }
        let replayed = client
            .identify(identify(vec![email(ERASED_EMAIL)]))
            .await
            .unwrap()
            .into_inner();
        assert!(replayed.suppressed, "still suppressed after the restore");
        get_by(&mut client, email(KEPT_EMAIL))
            .await
            .expect("the bystander is kept");
        let requests = PrivacyServiceClient::new(server.channel().await)
            .list_privacy_requests(pb::ListPrivacyRequestsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .requests;
        assert!(
            requests
                .iter()
                .any(|r| r.request_id == "erasure-after-backup")
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_restore_refuses_privacy_records_of_another_installation() {
    let backups = tempfile::tempdir().unwrap();
    let (before, after) = (backups.path().join("before"), backups.path().join("after"));
    let replaced = erasure_after_a_backup(&before, &after).await;
    let other = TestServer::start().await.stop().await;
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("data");
    let refused = restore(&before, &data, Some(other.path()), replaced.path()).unwrap_err();
    assert!(refused.to_string().contains("suppression key"), "{refused}");
    assert!(!data.exists(), "a refused restore leaves nothing behind");
    restore(&before, &data, None, replaced.path()).expect("and can be run again");

    // A source that is neither a backup nor a data directory is refused
    // before anything is written.
    let elsewhere = tempfile::tempdir().unwrap();
    let fresh = elsewhere.path().join("data");
    let missing = restore(
        &before,
        &fresh,
        Some(&elsewhere.path().join("nothing")),
        replaced.path(),
    )
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("neither a backup nor a data directory"),
        "{missing}"
    );
    assert!(!fresh.exists());
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_every_acknowledged_write() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for i in 0..PEOPLE_BEFORE {
        let mut call = identify(vec![email(&format!("p{i}@example.com"))]);
        call.traits = traits(&[("n", number(i as f64))]);
        call.message_id = format!("before-{i}");
        client.identify(call).await.unwrap();
    }
    // Two profiles merged by a later call: the restore must keep the merge
    // (identifier index, alias) whole.
    client
        .identify(identify(vec![phone("07911 123111")]))
        .await
        .unwrap();
    let merged = client
        .identify(identify(vec![
            email("p0@example.com"),
            phone("07911 123111"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.merged_profile_ids.len(), 1);

    // Writes keep coming while the backup is taken, one after another, each
    // with when it was sent and when it was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut client = server.client().await;
        tokio::spawn(async move {
            let mut timeline = Vec::new();
            while !stop.load(Ordering::Relaxed) && timeline.len() < 50_000 {
                let written = timeline.len();
                let mut call = track(
                    vec![email(&format!("p{}@example.com", written % 7))],
                    "Tick",
                );
                call.message_id = format!("during-{written}");
                let sent = std::time::Instant::now();
                client.track(call).await.unwrap();
                timeline.push((sent, std::time::Instant::now()));
            }
            timeline
        })
    };
    // Some writes are acknowledged before the backup starts.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("nightly");
    let mut admin = AdminServiceClient::new(server.channel().await);
    let backup_sent = std::time::Instant::now();
    let report = admin
        .backup(pb::BackupRequest {
            directory: target.display().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let backup_done = std::time::Instant::now();
    // And some after it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let timeline = writer.await.unwrap();
    let written_during = timeline.len();
    let acked_before = timeline
        .iter()
        .filter(|(_, acked)| *acked < backup_sent)
        .count();
    let overlapping = timeline
        .iter()
        .filter(|(sent, acked)| *sent < backup_done && *acked > backup_sent)
        .count();
    let sent_after = timeline
        .iter()
        .position(|(sent, _)| *sent > backup_done)
        .unwrap_or(timeline.len());
    assert!(
        acked_before > 0,
        "writes were acknowledged before the backup"
    );
    assert!(overlapping > 0, "a write was open while the backup ran");
    assert!(
        sent_after < timeline.len(),
        "writes went on after the backup"
    );
    assert!(report.keys > PEOPLE_BEFORE as u64);
    assert!(report.path.ends_with("sightline.backup"), "{report:?}");

    let again = admin
        .backup(pb::BackupRequest {
            directory: target.display().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let relative = admin
        .backup(pb::BackupRequest {
            directory: "relative/dir".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(relative.code(), tonic::Code::InvalidArgument);
    let source = server.stop().await;

    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let loaded = restore(&target, &data, None, source.path()).unwrap();
    assert_eq!(loaded.keys, report.keys);
    assert!(
        restore(&target, &data, None, source.path()).is_err(),
        "a non-empty data directory is refused"
    );

    let mut config = test_config(&restored);
    config.storage.url = database_url(&data);
    config.data_dir = data;
    let server = TestServer::start_with(restored, config).await;
    let mut client = server.client().await;
    for i in 0..PEOPLE_BEFORE {
        let profile = get_by(&mut client, email(&format!("p{i}@example.com")))
            .await
            .unwrap_or_else(|status| panic!("p{i}: {status:?}"));
        let n = profile.traits.as_ref().unwrap().fields["n"].clone();
        assert_eq!(n, number(i as f64));
    }
    let by_phone = get_by(&mut client, phone("07911 123111")).await.unwrap();
    assert_eq!(by_phone.profile_id, merged.profile_id);
    let absorbed = get_by_id(&mut client, &merged.merged_profile_ids[0])
        .await
        .unwrap();
    assert_eq!(absorbed.profile_id, merged.profile_id);

    // The backup holds exactly the writes up to one point: all those
    // acknowledged before it started, none sent after it was answered, and
    // each whole (the events a profile counts are the events it holds).
    let mut ticks = std::collections::BTreeSet::new();
    for i in 0..7 {
        let profile = get_by(&mut client, email(&format!("p{i}@example.com")))
            .await
            .unwrap();
        assert_eq!(profile.event_count as usize, profile.events.len());
        for event in &profile.events {
            let provenance = event.provenance.as_ref().expect("provenance");
            if let Some(n) = provenance.message_id.strip_prefix("during-") {
                ticks.insert(n.parse::<usize>().expect("a number"));
            }
        }
    }
    let held = ticks.len();
    assert!(
        ticks.iter().copied().eq(0..held),
        "the writes held are a prefix of those made"
    );
    assert!(
        held >= acked_before,
        "{held} held, {acked_before} acknowledged before the backup"
    );
    assert!(
        held <= sent_after,
        "{held} held, {sent_after} sent before it ended"
    );
    assert!(held <= written_during);
    println!(
        "backup under load: {acked_before} writes acknowledged before it, {overlapping} open during it, {held} in it"
    );

    // The restored server takes new writes, and ids continue.
    let fresh = client
        .identify(identify(vec![email("new@example.com")]))
        .await
        .unwrap()
        .into_inner();
    let all_ids: Vec<u64> = [fresh.profile_id.as_str(), merged.profile_id.as_str()]
        .iter()
        .map(|id| id.trim_start_matches('p').parse().unwrap())
        .collect();
    assert!(all_ids[0] > all_ids[1]);
    let repeated = {
        let mut call = identify(vec![email("p1@example.com")]);
        call.message_id = "before-1".to_owned();
        client.identify(call).await.unwrap().into_inner()
    };
    assert!(repeated.duplicate, "idempotency keys are restored too");
}
