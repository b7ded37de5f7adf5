//! What the benchmarks share: the real server binary in a temporary data
//! directory, and a client that waits for it to listen.

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

pub struct Server {
    child: Child,
    pub port: u16,
    data_dir: tempfile::TempDir,
}

// Not every benchmark looks at the server's memory or disk.
#[allow(dead_code)]
impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server() -> Server {
    let data_dir = tempfile::tempdir().expect("data dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data_dir.path());
    // A server configuration to benchmark, e.g. another cache size.
    if let Ok(config) = std::env::var("BENCH_SERVER_CONFIG") {
        command.args(["--config", &config]);
    }
    let child = command
        .env("SIGHTLINE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sightline");
    Server {
        child,
        port,
        data_dir,
    }
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
