//! `sightline serve` as an operator meets it: what it says when it cannot
//! start, and logs fit for a file.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::free_port;

fn serve(data_dir: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs a server that must fail to start and returns what it printed.
fn failed_start(mut command: Command) -> String {
    let output = command.output().expect("run sightline");
    assert!(!output.status.success(), "it should not start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_port_or_a_held_data_directory_is_named_and_logs_in_a_pipe_carry_no_colour() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let mut running = serve(data_dir.path(), port).spawn().expect("start");
    // Its own log says when it serves (the port alone could be another's).
    let stderr = running.stderr.take().expect("stderr");
    let (lines, logged) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut logs = String::new();
    while !logs.contains("serving") {
        let line = tokio::task::block_in_place(|| logged.recv_timeout(Duration::from_secs(60)))
            .unwrap_or_else(|_| panic!("the server did not start: {logs}"));
        logs.push_str(&line);
        logs.push('\n');
    }

    let other_dir = tempfile::tempdir().expect("data dir");
    let printed = failed_start(serve(other_dir.path(), port));
    assert!(
        printed.contains(&format!("127.0.0.1:{port}")),
        "names the address: {printed}"
    );
    let printed = failed_start(serve(data_dir.path(), free_port()));
    assert!(
        printed.contains("another server") && !printed.contains("WouldBlock"),
        "says the directory is held: {printed}"
    );
    assert!(!printed.contains('\u{1b}'), "no colour codes: {printed:?}");

    let _ = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status();
    let status = tokio::task::block_in_place(|| running.wait()).expect("stops");
    assert!(status.success(), "graceful stop: {status}");
    tokio::task::block_in_place(|| reader.join()).expect("reader");
    logs.extend(logged.try_iter().map(|line| line + "\n"));
    assert!(logs.contains("stopped"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no colour codes: {logs:?}");
}

/// A database the server cannot use stops it at start, within the connect
/// timeout, with a message that names the problem and the database but
/// never the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_it_cannot_use_stops_the_start_naming_the_problem_but_not_the_password() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let start = |url: String| {
        let mut command = serve(data_dir.path(), free_port());
        command.args(["--store", &url]);
        let started = std::time::Instant::now();
        let printed = tokio::task::block_in_place(|| failed_start(command));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "fails at once, not after a hang"
        );
        assert!(!printed.contains("hunter2"), "no password: {printed}");
        printed
    };

    let nobody_listens = free_port();
    let printed = start(format!(
        "postgres://shop:hunter2@127.0.0.1:{nobody_listens}/profiles"
    ));
    assert!(
        printed.contains(&format!("127.0.0.1:{nobody_listens}/profiles"))
            && printed.contains("refused"),
        "names the database and the refusal: {printed}"
    );

    let Some(server) = crate::support::postgres_server() else {
        return;
    };
    let base = server
        .rsplit_once('/')
        .map(|(base, _)| base.to_owned())
        .unwrap_or(server.clone());
    let (host_port, user) = {
        let config: tokio_postgres::Config = server.parse().expect("test database URL");
        let port = config.get_ports().first().copied().unwrap_or(5432);
        (
            format!("127.0.0.1:{port}"),
            config.get_user().unwrap_or("postgres").to_owned(),
        )
    };
    let printed = start(format!(
        "postgres://no_such_role:hunter2@{host_port}/postgres"
    ));
    assert!(
        printed.contains("no_such_role") && printed.contains("28000"),
        "says the role was refused: {printed}"
    );

    // A layout written by a newer release.
    let newer = format!("newer_{}", std::process::id());
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    for statement in [
        format!("DROP DATABASE IF EXISTS {newer}"),
        format!("CREATE DATABASE {newer}"),
    ] {
        client.batch_execute(&statement).await.expect(&statement);
    }
    let (newer_client, connection) =
        tokio_postgres::connect(&format!("{base}/{newer}"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    newer_client
        .batch_execute(
            "CREATE TABLE sightline_schema (name TEXT PRIMARY KEY, version BIGINT NOT NULL); \
             INSERT INTO sightline_schema VALUES ('layout', 99)",
        )
        .await
        .expect("a newer layout");
    drop(newer_client);
    let printed = start(format!("postgres://{user}:hunter2@{host_port}/{newer}"));
    assert!(
        printed.contains("layout version 99") && printed.contains(&newer),
        "says the layout is newer: {printed}"
    );
    let _ = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {newer} WITH (FORCE)"))
        .await;
}
