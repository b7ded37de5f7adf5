//! TLS and mutual TLS with certificates made at test time: a CA, a server
//! certificate for `localhost`, and a client certificate.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};
use sightline::config::TlsConfig;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::support::*;

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).expect("write a PEM file");
}

fn make_pki() -> Pki {
    let dir = tempfile::tempdir().expect("temporary dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);

    let server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let client_params = CertificateParams::new(vec!["crm-sync".to_owned()]).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

    write(dir.path(), "ca.pem", &ca_cert.pem());
    write(dir.path(), "server.pem", &server_cert.pem());
    write(dir.path(), "server.key", &server_key.serialize_pem());
    Pki {
        dir,
        ca_pem: ca_cert.pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

async fn start_tls(pki: &Pki, require_client_cert: bool) -> TestServer {
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = test_config(&data_dir);
    config.tls = Some(TlsConfig {
        cert_path: pki.path("server.pem"),
        key_path: pki.path("server.key"),
        client_ca_path: require_client_cert.then(|| pki.path("ca.pem")),
    });
    TestServer::start_with(data_dir, config).await
}

fn tls_channel(
    server: &TestServer,
    pki: &Pki,
    with_client_cert: bool,
) -> tonic::transport::Endpoint {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(
            &pki.client_cert_pem,
            &pki.client_key_pem,
        ));
    }
    Channel::from_shared(format!("https://{}", server.address))
        .expect("endpoint")
        .tls_config(tls)
        .expect("client TLS config")
}

/// Connects, retrying while the server starts.
async fn tls_client(server: &TestServer, pki: &Pki, with_client_cert: bool) -> Client {
    let endpoint = tls_channel(server, pki, with_client_cert);
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return Client::new(channel);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no TLS connection to {}", server.address);
}

#[tokio::test]
async fn calls_work_over_tls_and_plaintext_is_refused() {
    let pki = make_pki();
    let server = start_tls(&pki, false).await;
    let mut client = tls_client(&server, &pki, false).await;
    let written = client
        .identify(identify(vec![email("jane@example.com")]))
        .await
        .expect("identify over TLS")
        .into_inner();
    let profile = get_by(&mut client, email("jane@example.com"))
        .await
        .unwrap();
    assert_eq!(profile.profile_id, written.profile_id);

    let plaintext = async {
        let channel = Channel::from_shared(format!("http://{}", server.address))
            .unwrap()
            .connect()
            .await?;
        Client::new(channel)
            .identify(identify(vec![user("plain")]))
            .await
            .map_err(Box::<dyn std::error::Error>::from)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(plaintext.await.is_err(), "a plaintext client is not served");
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = make_pki();
    let server = start_tls(&pki, true).await;
    let mut client = tls_client(&server, &pki, true).await;
    client
        .identify(identify(vec![user("with-cert")]))
        .await
        .expect("a client with a certificate from the CA is served");

    let without_cert = async {
        let channel = tls_channel(&server, &pki, false).connect().await?;
        Client::new(channel)
            .identify(identify(vec![user("without-cert")]))
            .await
            .map_err(Box::<dyn std::error::Error>::from)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(
        without_cert.await.is_err(),
        "no client certificate, no call"
    );
    let missing = get_by(&mut client, user("without-cert")).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// One HTTP/1.1 request over TLS, written by hand; the status code and body.
async fn https_request(
    address: std::net::SocketAddr,
    pki: &Pki,
    request: &str,
) -> std::io::Result<(u16, String)> {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::pem::PemObject::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(certificate.expect("CA PEM")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = connector.connect(name, tcp).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    // The server closes after answering (`connection: close`); a TLS
    // close_notify may or may not come first.
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    Ok((status, text))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_api_is_served_over_tls_with_the_same_certificates() {
    let pki = make_pki();
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = test_config(&data_dir);
    config.tls = Some(TlsConfig {
        cert_path: pki.path("server.pem"),
        key_path: pki.path("server.key"),
        client_ca_path: None,
    });
    let token = sightline::security::generate_token().unwrap();
    config.auth.tokens.push(sightline::config::TokenConfig {
        name: "web".to_owned(),
        scopes: vec![sightline::security::Scope::Admin],
        sha256: sightline::security::hash_token(&token).to_string(),
    });
    let server = TestServer::start_with_http(data_dir, config).await;
    let address = server.http_address.expect("HTTP listener");
    let body = r#"{"userId":"u-tls","event":"Signed Up","messageId":"tls-1"}"#;
    let request = format!(
        "POST /v1/track HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(answer) = https_request(address, &pki, &request).await {
            answered = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, text) = answered.expect("an HTTPS answer");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#"{"success":true}"#), "{text}");

    // Plaintext HTTP to the same port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(address).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = plain
        .write_all(b"GET /v1/profiles/p1 HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    let read = format!(
        "GET /v1/profiles/user_id:u-tls?fields=events HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    let (status, text) = https_request(address, &pki, &read)
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Signed Up"), "{text}");
    server.stop().await;
}
