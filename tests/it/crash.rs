//! Killing the server with SIGKILL at arbitrary moments loses no
//! acknowledged write and leaves no half-applied merge. A short run is part
//! of the suite; `CRASH_CYCLES=1000 cargo test --test it crash` soaks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

const WORKERS: usize = 4;

/// A small deterministic generator for kill delays and operations.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Acknowledged tracks: message id → the identifier it was sent with.
type Acknowledged = Arc<Mutex<BTreeMap<String, String>>>;

async fn worker(port: u16, worker: usize, cycle: usize, acknowledged: Acknowledged) {
    let Ok(mut client) = Client::connect(format!("http://127.0.0.1:{port}")).await else {
        return;
    };
    for step in 0.. {
        let person = format!("w{worker}-p{}", step % 7);
        // Every fifth call links a person's cookie to their user id: merges
        // happen while the server may be killed.
        if step % 5 == 4 {
            let link = identify(vec![
                user(&person),
                id("anonymous_id", &format!("{person}-c{cycle}")),
            ]);
            if client.identify(link).await.is_err() {
                return;
            }
            continue;
        }
        let message_id = format!("w{worker}-c{cycle}-s{step}");
        let identifier = if step % 2 == 0 {
            user(&person)
        } else {
            id("anonymous_id", &format!("{person}-c{cycle}"))
        };
        let mut event = track(vec![identifier.clone()], "Page Viewed");
        event.message_id = message_id.clone();
        match client.track(event).await {
            Ok(_) => {
                let value = format!("{}:{}", identifier.kind, identifier.value);
                acknowledged.lock().expect("lock").insert(message_id, value);
            }
            Err(_) => return,
        }
    }
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let data_dir = tempfile::tempdir().unwrap();
    let acknowledged: Acknowledged = Arc::default();
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    for cycle in 0..cycles {
        let port = free_port();
        let mut child = spawn_binary(data_dir.path(), port);
        drop(connect_port(port).await);
        let workers: Vec<_> = (0..WORKERS)
            .map(|index| tokio::spawn(worker(port, index, cycle, acknowledged.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(50 + random.next() % 250)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        for task in workers {
            task.await.expect("worker");
        }
    }

    let port = free_port();
    let mut child = spawn_binary(data_dir.path(), port);
    let mut client = connect_port(port).await;
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        !acknowledged.is_empty(),
        "the workers got nothing acknowledged"
    );
    let mut per_profile: BTreeMap<String, u64> = BTreeMap::new();
    for (message_id, identifier) in &acknowledged {
        let (kind, value) = identifier.split_once(':').expect("kind:value");
        let mut replay = track(vec![id(kind, value)], "Page Viewed");
        replay.message_id = message_id.clone();
        let response = client.track(replay).await.expect("replay").into_inner();
        assert!(response.duplicate, "acknowledged {message_id} was lost");
        let profile = get_by(&mut client, id(kind, value))
            .await
            .expect("resolves");
        assert!(
            identifier_values(&profile).contains(identifier),
            "{identifier} resolves to a profile that does not list it"
        );
        *per_profile.entry(profile.profile_id).or_default() += 1;
    }
    for (profile_id, acked_events) in per_profile {
        let profile = get_by_id(&mut client, &profile_id).await.expect("profile");
        assert!(
            profile.event_count >= acked_events,
            "{profile_id} lost events"
        );
        for merged in &profile.merged_profile_ids {
            let alias = get_by_id(&mut client, merged)
                .await
                .expect("alias resolves");
            assert_eq!(alias.profile_id, profile_id);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
