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
