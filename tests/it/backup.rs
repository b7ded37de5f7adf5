//! Backups taken from a serving server while writes continue, restored
//! offline into a new data directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sightline::api::pb::{self, admin_service_client::AdminServiceClient};
use sightline::store::SledStore;

use crate::support::*;

const PEOPLE_BEFORE: usize = 300;

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

    // Writes keep coming while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut client = server.client().await;
        tokio::spawn(async move {
            let mut written = 0usize;
            while !stop.load(Ordering::Relaxed) && written < 50_000 {
                let mut call = track(
                    vec![email(&format!("p{}@example.com", written % 7))],
                    "Tick",
                );
                call.message_id = format!("during-{written}");
                client.track(call).await.unwrap();
                written += 1;
            }
            written
        })
    };
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("nightly");
    let mut admin = AdminServiceClient::new(server.channel().await);
    let report = admin
        .backup(pb::BackupRequest {
            directory: target.display().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    stop.store(true, Ordering::Relaxed);
    let written_during = writer.await.unwrap();
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
    server.stop().await;

    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let loaded = SledStore::restore(&target, &data).unwrap();
    assert_eq!(loaded.keys, report.keys);
    assert!(
        SledStore::restore(&target, &data).is_err(),
        "a non-empty data directory is refused"
    );

    let mut config = test_config(&restored);
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

    // Every write made during the backup is there whole or not at all:
    // the events a profile counts are the events it holds.
    let mut ticks = 0;
    for i in 0..7 {
        let profile = get_by(&mut client, email(&format!("p{i}@example.com")))
            .await
            .unwrap();
        assert_eq!(profile.event_count as usize, profile.events.len());
        ticks += profile.events.len();
    }
    assert!(ticks <= written_during);

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
