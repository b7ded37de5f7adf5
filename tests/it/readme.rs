//! The README's "A first session", run as written against a fresh server:
//! every command must succeed (or fail as its comment says), and every
//! answer shown in a comment must be what the server answers.

use std::collections::BTreeMap;
use std::process::Command;

use regex::Regex;

use crate::support::*;

/// One command of the walk-through and what its comments promise.
#[derive(Debug)]
struct Step {
    command: String,
    /// Fields and values shown in a `# {...}` line after it.
    expected: BTreeMap<String, String>,
    /// The error code named in its trailing comment, if it must fail.
    fails_with: Option<String>,
}

fn first_session() -> Vec<Step> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## A first session\n")
        .nth(1)
        .expect("a first session in the README");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a shell block");
    let field = Regex::new(r#""(\w+)": "([^"]*)""#).expect("regex");
    let code = Regex::new(r"#\s*([A-Z_]{6,})").expect("regex");
    let mut steps: Vec<Step> = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = line.trim_end();
        if let Some(comment) = line.trim_start().strip_prefix('#') {
            if let Some(step) = steps.last_mut() {
                for found in field.captures_iter(comment) {
                    step.expected
                        .insert(found[1].to_owned(), found[2].to_owned());
                }
            }
            continue;
        }
        if line.starts_with("alias ") || line.is_empty() {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued);
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let (command, comment) = match whole.find(" # ") {
            Some(at) => (whole[..at].to_owned(), whole[at..].to_owned()),
            None => (whole, String::new()),
        };
        steps.push(Step {
            command: command.trim().to_owned(),
            expected: BTreeMap::new(),
            fails_with: code.captures(&comment).map(|found| found[1].to_owned()),
        });
    }
    steps
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_first_session_runs_as_written() {
    let steps = first_session();
    assert!(steps.len() >= 5, "{steps:?}");
    let server = TestServer::start().await;
    let _ = server.client().await;
    for step in &steps {
        assert!(step.command.starts_with("sightline "), "{step:?}");
        let script = format!(
            "sightline() {{ \"$SIGHTLINE_BIN\" \"$@\"; }}\n{}",
            step.command
        );
        let output = tokio::task::block_in_place(|| {
            Command::new("sh")
                .arg("-c")
                .arg(&script)
                .env("SIGHTLINE_BIN", env!("CARGO_BIN_EXE_sightline"))
                .env("SIGHTLINE_SERVER", server.address.to_string())
                .output()
                .expect("run sh")
        });
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(code) = &step.fails_with {
            assert!(!output.status.success(), "{}: should fail", step.command);
            assert!(
                stderr.contains(code.as_str()),
                "{}: expected {code}: {stderr}",
                step.command
            );
            continue;
        }
        assert!(
            output.status.success(),
            "{}: {stdout}\n{stderr}",
            step.command
        );
        if step.expected.is_empty() {
            continue;
        }
        let answer: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|_| panic!("{}: not JSON: {stdout}", step.command));
        for (name, value) in &step.expected {
            let got = &answer[name.as_str()];
            let matches = got == value
                || got
                    .as_array()
                    .is_some_and(|items| items.iter().any(|item| item == value));
            assert!(
                matches,
                "{}: {name} is {got}, the README says {value}",
                step.command
            );
        }
    }
    server.stop().await;
}
