//! What the benchmarks share: the real server binary in a temporary data
//! directory, a client that waits for it to listen, the reference echo
//! process, the load generators and the way figures are measured and
//! printed.
//!
//! Every bench binary compiles this whole module and uses a part of it,
//! hence the allowance for unused items.
#![allow(dead_code)]

pub mod calls;
pub mod echo;
pub mod measure;
pub mod population;
pub mod privacy;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sightline::api::pb::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

pub struct Server {
    child: Child,
    pub port: u16,
    data_dir: tempfile::TempDir,
    flags: Vec<String>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Stops the server the way an operator would (SIGTERM, graceful
    /// shutdown) and keeps its data directory, so that the files can be
    /// examined once nothing writes to them.
    pub fn stop(&mut self) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if !terminated {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Stops the server and starts it again on the same data directory,
    /// on a new port.
    pub fn restart(&mut self) {
        self.stop();
        self.port = free_port();
        self.child = spawn(self.port, self.data_dir.path(), &self.flags);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server() -> Server {
    start_server_with(&[])
}

/// The server with extra `serve` flags.
pub fn start_server_with(flags: &[String]) -> Server {
    let data_dir = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let child = spawn(port, data_dir.path(), flags);
    Server {
        child,
        port,
        data_dir,
        flags: flags.to_vec(),
    }
}

fn spawn(port: u16, data_dir: &Path, flags: &[String]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data_dir)
        .args(flags);
    // A server configuration to benchmark, e.g. another cache size.
    if let Ok(config) = std::env::var("BENCH_SERVER_CONFIG") {
        command.args(["--config", &config]);
    }
    command
        .env("SIGHTLINE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sightline")
}

pub async fn connect(port: u16) -> ProfileServiceClient<Channel> {
    ProfileServiceClient::new(channel(port).await)
}

/// One HTTP/2 connection to a local server, waiting for it to listen.
pub async fn channel(port: u16) -> Channel {
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..500 {
        if let Ok(channel) = Channel::from_shared(endpoint.clone())
            .expect("endpoint")
            .connect()
            .await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server did not start");
}

/// Peak and current resident memory of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub fn directory_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .expect("read data dir")
        .map(|entry| {
            let entry = entry.expect("dir entry");
            let metadata = entry.metadata().expect("metadata");
            if metadata.is_dir() {
                directory_bytes(&entry.path())
            } else {
                // Allocated blocks, not the apparent length: sled's files
                // may be sparse.
                std::os::unix::fs::MetadataExt::blocks(&metadata) * 512
            }
        })
        .sum()
}
