//! The suite runs on one engine per run: sled by default, PostgreSQL when
//! `SIGHTLINE_TEST_POSTGRES` names a server (`scripts/test-postgres`).

use std::io::Write;

use crate::support::{self, TestServer, email, identify};

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
