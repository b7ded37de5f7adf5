//! The command-line client against a real server, as an operator types it.

use std::process::{Command, Output, Stdio};

use crate::support::*;

fn sightline(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
    // No scheme: `host:port` is how people write an address.
    command
        .args(args)
        .args(["--server", &server.address.to_string()]);
    command
}

fn succeeded(output: Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_takes_an_address_without_a_scheme_and_a_closed_pipe_is_not_a_panic() {
    let server = TestServer::start().await;
    let _ = server.client().await;
    let identified = tokio::task::block_in_place(|| {
        sightline(&server, &["identify", "--id", "email:cli@example.com"])
            .output()
            .expect("run")
    });
    let identified = succeeded(identified);
    assert_eq!(identified["outcome"], "RESOLUTION_OUTCOME_CREATED");

    // The reader goes away before the answer is written, as `| head` does.
    let mut child = sightline(&server, &["profile", "--id", "email:cli@example.com"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    drop(child.stdout.take());
    let output = tokio::task::block_in_place(|| child.wait_with_output()).expect("ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    server.stop().await;
}
