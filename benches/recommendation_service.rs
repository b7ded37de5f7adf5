//! What recommendations cost through the real server: durable ingest of
//! shoppers (an identify, three product views and two orders each) with
//! recommendations on over the same with them off (target ≥ 0.8), and
//! `GetRecommendations` at 16 in flight over `GetProfile` in the same run
//! (target ≥ 0.6), with p99, and the servers' resident memory. Run with
//! `cargo bench --bench recommendation_service`. Sizes: `BENCH_PRODUCTS`
//! (catalogue uploaded first, default 100000), `BENCH_SHOPPERS` (default
//! 100000; design 9 asks for 1000000), `BENCH_RUNS` (default 3),
//! `BENCH_READ_SECONDS` (default 5, after 1 s of warm-up).

mod common;

use common::calls::GetProfile;
use common::measure::{Caller, closed_loop, median};
use common::population::load_range;
use common::population::{email_of, mix, object, text};
use common::{channel, env_number, memory_kib, start_server_with};

use sightline::api::pb::{
    self, get_recommendations_request, ingest_request::Item,
    recommendation_service_client::RecommendationServiceClient,
};
use tonic::transport::Channel;

const EVENTS_PER_SHOPPER: u64 = 6;

/// Product ids by a power law over the catalogue, so that some sell far
/// more than others.
fn product_of(random: u64, products: u64) -> String {
    let u = (random % 1_000_000) as f64 / 1_000_000.0;
    let index = ((products as f64).powf(u) - 1.0).floor() as u64;
    format!("sku-{}", index.min(products - 1))
}

fn shopper_items(person: u64, products: u64) -> Vec<pb::IngestRequest> {
    let who = email_of(person);
    let mut items = vec![pb::IngestRequest {
        item: Some(Item::Identify(pb::IdentifyRequest {
            identifiers: vec![who.clone()],
            message_id: format!("shopper-{person}"),
            ..Default::default()
        })),
    }];
    for event in 1..EVENTS_PER_SHOPPER {
        let random = mix(person * 31 + event);
        let (name, properties) = if event <= 3 {
            (
                "Product Viewed",
                object(vec![("product_id", text(product_of(random, products)))]),
            )
        } else {
            let line = |seed: u64| prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(object(vec![(
                    "product_id",
                    text(product_of(mix(seed), products)),
                )]))),
            };
            let list = prost_types::Value {
                kind: Some(prost_types::value::Kind::ListValue(
                    prost_types::ListValue {
                        values: vec![line(random), line(random + 1)],
                    },
                )),
            };
            ("Order Completed", object(vec![("products", list)]))
        };
        items.push(pb::IngestRequest {
            item: Some(Item::Track(pb::TrackRequest {
                identifiers: vec![who.clone()],
                event: name.to_owned(),
                properties: Some(properties),
                message_id: format!("shopper-{person}-{event}"),
                ..Default::default()
            })),
        });
    }
    items
}

#[derive(Clone)]
struct GetRecommendations {
    client: RecommendationServiceClient<Channel>,
    people: u64,
}

impl Caller for GetRecommendations {
    async fn call(&mut self, sequence: u64) {
        let request = pb::GetRecommendationsRequest {
            lookup: Some(get_recommendations_request::Lookup::Identifier(email_of(
                mix(sequence) % self.people,
            ))),
            limit: 10,
            ..Default::default()
        };
        self.client
            .get_recommendations(request)
            .await
            .expect("get recommendations");
    }
}

fn config_file(enabled: bool) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(
        file.path(),
        format!("[recommendations]\nenabled = {enabled}\npersonalise_without_consent = true\n"),
    )
    .expect("write config");
    file
}

fn main() {
    let products = env_number("BENCH_PRODUCTS", 100_000);
    let shoppers = env_number("BENCH_SHOPPERS", 100_000);
    let runs = env_number("BENCH_RUNS", 3);
    let read_seconds = env_number("BENCH_READ_SECONDS", 5);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (on_config, off_config) = (config_file(true), config_file(false));
    let flags = |file: &tempfile::NamedTempFile| {
        vec!["--config".to_owned(), file.path().display().to_string()]
    };
    let on = start_server_with(&flags(&on_config));
    let off = start_server_with(&flags(&off_config));

    runtime.block_on(async {
        let mut client = RecommendationServiceClient::new(channel(on.port).await);
        for start in (0..products).step_by(1000) {
            let batch = (start..(start + 1000).min(products))
                .map(|index| pb::Product {
                    product_id: format!("sku-{index}"),
                    name: format!("Product {index}"),
                    category: format!("category {}", index % 200),
                    price: Some(10.0),
                    available: Some(true),
                })
                .collect();
            client
                .put_products(pb::PutProductsRequest { products: batch })
                .await
                .expect("put products");
        }
    });

    // Ingest alternates between the servers, a slice of the shoppers per
    // run, so that both see the same machine load.
    let slice = shoppers / runs.max(1);
    let (mut rate_on, mut rate_off) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let range = run * slice..(run + 1) * slice;
        for (server, rates) in [(&on, &mut rate_on), (&off, &mut rate_off)] {
            let seconds = runtime.block_on(load_range(server.port, range.clone(), move |person| {
                shopper_items(person, products)
            }));
            rates.push((slice * EVENTS_PER_SHOPPER) as f64 / seconds);
        }
    }
    let loaded = slice * runs;
    let (mut recommend, mut profile) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let figures = runtime.block_on(closed_loop(on.port, read_seconds, |channel| {
            GetRecommendations {
                client: RecommendationServiceClient::new(channel),
                people: loaded,
            }
        }));
        recommend.push(figures);
        let figures = runtime.block_on(closed_loop(on.port, read_seconds, |channel| {
            GetProfile::new(channel, loaded)
        }));
        profile.push(figures);
    }
    let per_second = |figures: &[common::measure::LoopFigures]| {
        median(&figures.iter().map(|f| f.per_second).collect::<Vec<_>>())
    };
    let p99_ms = |figures: &[common::measure::LoopFigures]| {
        median(
            &figures
                .iter()
                .map(|f| f.p99_us / 1000.0)
                .collect::<Vec<_>>(),
        )
    };
    let (on_peak, _) = memory_kib(on.pid());
    let (off_peak, _) = memory_kib(off.pid());
    drop(off);
    // The counts are not stored: at open they are summed again over every
    // stored history.
    let mut on = on;
    let reopening = std::time::Instant::now();
    on.restart();
    runtime.block_on(async {
        let request = pb::GetRelatedProductsRequest {
            product_id: "sku-0".to_owned(),
            limit: 10,
        };
        loop {
            if let Ok(channel) =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", on.port))
                    .expect("endpoint")
                    .connect()
                    .await
            {
                let mut client = RecommendationServiceClient::new(channel);
                if client.get_related_products(request.clone()).await.is_ok() {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let reopened = reopening.elapsed().as_secs_f64();
    let (reopened_rss, _) = memory_kib(on.pid());
    println!(
        "{products} products, {loaded} shoppers ({} events each), {runs} runs, medians",
        EVENTS_PER_SHOPPER
    );
    println!(
        "ingest with recommendations on  {:>10.0} items/s",
        median(&rate_on)
    );
    println!(
        "ingest with recommendations off {:>10.0} items/s   ratio {:.2} (target ≥ 0.80)",
        median(&rate_off),
        median(&rate_on) / median(&rate_off)
    );
    println!(
        "GetRecommendations, 16 in flight {:>9.0} req/s   p99 {:.2} ms",
        per_second(&recommend),
        p99_ms(&recommend)
    );
    println!(
        "GetProfile, 16 in flight         {:>9.0} req/s   p99 {:.2} ms   ratio {:.2} (target ≥ 0.60)",
        per_second(&profile),
        p99_ms(&profile),
        per_second(&recommend) / per_second(&profile)
    );
    println!(
        "peak resident memory: on {:.0} MiB, off {:.0} MiB (the model and histories: {:.0} MiB)",
        on_peak as f64 / 1024.0,
        off_peak as f64 / 1024.0,
        (on_peak as f64 - off_peak as f64) / 1024.0
    );
    println!(
        "restart with {loaded} histories: answering after {reopened:.1} s, peak resident {:.0} MiB",
        reopened_rss as f64 / 1024.0
    );
}
