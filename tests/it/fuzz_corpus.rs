//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz
//! targets' bodies on stable Rust, so that the seeds and every input that
//! once crashed a target keep passing without a nightly toolchain.

use std::path::Path;

#[path = "../../fuzz/src/lib.rs"]
mod targets;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} holds no inputs", dir.display());
    let mut failed = Vec::new();
    for path in &paths {
        let data = std::fs::read(path).expect("corpus input");
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} panicked on {failed:?}");
}

#[test]
fn normalize_identifier_corpus_replays() {
    replay("normalize_identifier", targets::normalize_identifier);
}

#[test]
fn decode_requests_corpus_replays() {
    replay("decode_requests", targets::decode_requests);
}

#[test]
fn rule_compile_corpus_replays() {
    replay("rule_compile", targets::rule_compile);
}
