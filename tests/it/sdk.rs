//! The real Segment SDKs, installed once per test run from their registries
//! at the versions pinned under `tests/sdk/`, into the build's temporary
//! directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

fn install_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("sdk")
        .join(name)
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: cannot start: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Installs once; a marker holding the pinned list says it is done.
fn install(name: &str, pins: &Path, installer: impl FnOnce(&Path)) -> PathBuf {
    let dir = install_dir(name);
    let pinned = std::fs::read_to_string(pins).expect("pinned versions");
    let marker = dir.join(".installed");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(pinned.as_str()) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sdk directory");
        installer(&dir);
        std::fs::write(&marker, pinned).expect("marker");
    }
    dir
}

/// `segment-analytics-python`: the directory to put on `PYTHONPATH`.
pub fn python() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let requirements = sdk_dir().join("python/requirements.txt");
        install("python", &requirements, |dir| {
            run(
                Command::new("python3")
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .arg("--target")
                    .arg(dir)
                    .arg("-r")
                    .arg(&requirements),
                "pip install segment-analytics-python",
            )
        })
    })
}

/// `@segment/analytics-node`: the directory holding its `node_modules`.
pub fn node() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let lock = sdk_dir().join("node/package-lock.json");
        install("node", &lock, |dir| {
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(sdk_dir().join("node").join(file), dir.join(file))
                    .expect("copy package files");
            }
            run(
                Command::new("npm")
                    .args(["ci", "--silent", "--no-audit", "--no-fund"])
                    .current_dir(dir),
                "npm ci @segment/analytics-node",
            )
        })
    })
}
