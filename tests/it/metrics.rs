//! The Prometheus endpoint: request, ingest and store metrics after real
//! calls.

use sightline::api::pb::{self, ingest_request::Item};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

pub async fn scrape(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn counters_follow_the_calls_made() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = test_config(&data_dir);
    let extras = Extras {
        http: false,
        metrics: true,
    };
    let server = TestServer::start_with_extras(data_dir, config, extras).await;
    let port = server.metrics_port.expect("a metrics listener");
    let mut client = server.client().await;

    client
        .identify(identify(vec![email("a@example.com")]))
        .await
        .unwrap();
    client
        .identify(identify(vec![phone("07911 123222")]))
        .await
        .unwrap();
    client
        .identify(identify(vec![
            email("a@example.com"),
            phone("07911 123222"),
        ]))
        .await
        .unwrap();
    let invalid = client.identify(identify(vec![email("nope")])).await;
    assert!(invalid.is_err());
    let items = vec![
        pb::IngestRequest {
            item: Some(Item::Identify(identify(vec![email("b@example.com")]))),
        },
        pb::IngestRequest { item: None },
    ];
    client.ingest(futures::stream::iter(items)).await.unwrap();

    let response = scrape(port, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let identify = "/sightline.v1.ProfileService/Identify";
    let series = |labels: &str| format!("sightline_grpc_requests_total{{{labels}}}");
    assert_eq!(
        value(
            &response,
            &series(&format!("method=\"{identify}\",code=\"OK\""))
        ),
        Some(3.0),
        "{response}"
    );
    assert_eq!(
        value(
            &response,
            &series(&format!("method=\"{identify}\",code=\"INVALID_ARGUMENT\""))
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &response,
            &format!("sightline_grpc_request_duration_seconds_count{{method=\"{identify}\"}}")
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &response,
            &format!(
                "sightline_grpc_request_duration_seconds_bucket{{method=\"{identify}\",le=\"+Inf\"}}"
            )
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &response,
            "sightline_ingest_items_total{outcome=\"accepted\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &response,
            "sightline_ingest_items_total{outcome=\"rejected\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&response, "sightline_profiles_merged_total"),
        Some(1.0)
    );
    assert_eq!(value(&response, "sightline_write_queue_depth"), Some(0.0));
    assert_eq!(
        value(&response, "sightline_write_group_calls_sum"),
        Some(4.0),
        "three identifies and one ingest item were committed"
    );
    assert!(value(&response, "sightline_database_size_bytes").unwrap() > 0.0);
    assert_eq!(
        value(&response, "sightline_recommender_products"),
        Some(0.0),
        "no product event was sent"
    );

    let missing = scrape(port, "/other").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
