//! The reference service of design 9: `grpc.health.v1.Health/Check` from
//! `tonic-health`, served by the bench binary itself started again as a
//! separate process, so that it costs what an echo costs between two
//! processes: a tiny request, a tiny response, nothing else. (A generated
//! echo service would need the library's build script; a bench cannot have
//! one of its own.)

use std::process::{Child, Command, Stdio};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::free_port;
use super::measure::Caller;

/// Set in the environment of the reference process: the port to serve on.
const ECHO_PORT_VARIABLE: &str = "BENCH_ECHO_PORT";

pub struct EchoProcess {
    child: Child,
    pub port: u16,
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_echo() -> EchoProcess {
    let port = free_port();
    let child = Command::new(std::env::current_exe().expect("own path"))
        .env(ECHO_PORT_VARIABLE, port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start echo process");
    EchoProcess { child, port }
}

/// To be called first in `main`: when this process was started as the
/// echo, serves until killed and returns true.
pub fn serve_if_echo() -> bool {
    let Ok(port) = std::env::var(ECHO_PORT_VARIABLE) else {
        return false;
    };
    let port: u16 = port.parse().expect("echo port");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (_reporter, health) = tonic_health::server::health_reporter();
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health)
            .serve(([127, 0, 0, 1], port).into())
            .await
            .expect("serve echo");
    });
    true
}

/// One health check; against the echo process or, to see what the
/// server's layers cost, against Sightline.
#[derive(Clone)]
pub struct HealthCheck(HealthClient<Channel>);

impl HealthCheck {
    pub fn new(channel: Channel) -> Self {
        Self(HealthClient::new(channel))
    }
}

impl Caller for HealthCheck {
    async fn call(&mut self, _sequence: u64) {
        self.0
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");
    }
}
