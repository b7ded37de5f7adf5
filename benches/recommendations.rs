//! Recommendation quality on generated shoppers with known tastes: each
//! shopper favours one or two categories (products within a category are
//! bought by a power law) and most products have a complement in another
//! category that is often bought next. Every shopper's last order is left
//! out; the model is built from the rest exactly as the store builds it
//! (each history's contribution summed), and a hit is any product of the
//! left-out order among the top 10. Reported beside the popularity
//! baseline (the non-personalised list) as hit rate at 10 and NDCG at 10.
//! Run with `cargo bench --bench recommendations`; `BENCH_SHOPPERS`
//! (default 20000) and `BENCH_PRODUCTS` (default 2000) set the sizes, and
//! the three seeds' medians are reported.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sightline::model::UnixMillis;
use sightline::recommend::contribution::Contribution;
use sightline::recommend::history::{ProductMention, Signal};
use sightline::recommend::{Product, Query, Recommender, ShopperHistory, product_key};

const DAY_MS: i64 = 86_400_000;
const CATEGORIES: usize = 20;
const TOP: usize = 10;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Catalogue {
    /// Product ids per category, most popular first.
    by_category: Vec<Vec<String>>,
    complement: BTreeMap<String, String>,
}

fn catalogue(products: usize, rng: &mut SmallRng) -> Catalogue {
    let per_category = (products / CATEGORIES).max(2);
    let by_category: Vec<Vec<String>> = (0..CATEGORIES)
        .map(|c| (0..per_category).map(|p| format!("c{c}-p{p}")).collect())
        .collect();
    let mut complement = BTreeMap::new();
    for (c, products) in by_category.iter().enumerate() {
        for product in products {
            if rng.random_bool(0.7) {
                let other = (c + 1 + rng.random_range(0..CATEGORIES - 1)) % CATEGORIES;
                let list = &by_category[other];
                complement.insert(product.clone(), list[power_law(rng, list.len())].clone());
            }
        }
    }
    Catalogue {
        by_category,
        complement,
    }
}

/// An index in 0..len, small ones far likelier.
fn power_law(rng: &mut SmallRng, len: usize) -> usize {
    let u: f64 = rng.random();
    ((len as f64).powf(u) - 1.0).floor().min(len as f64 - 1.0) as usize
}

/// One shopper's orders, oldest first.
fn orders(catalogue: &Catalogue, rng: &mut SmallRng) -> Vec<(i64, Vec<String>)> {
    let favourites: Vec<usize> = (0..rng.random_range(1..=2))
        .map(|_| rng.random_range(0..CATEGORIES))
        .collect();
    let count = rng.random_range(2..=6);
    let mut day = rng.random_range(0..30);
    let mut bought: Vec<String> = Vec::new();
    let mut orders = Vec::new();
    for _ in 0..count {
        let mut order = Vec::new();
        // Often the complement of something bought before.
        if let Some(previous) = bought.last()
            && let Some(next) = catalogue.complement.get(previous)
            && rng.random_bool(0.6)
        {
            order.push(next.clone());
        }
        let category = if rng.random_bool(0.85) {
            favourites[rng.random_range(0..favourites.len())]
        } else {
            rng.random_range(0..CATEGORIES)
        };
        let list = &catalogue.by_category[category];
        order.push(list[power_law(rng, list.len())].clone());
        order.dedup();
        bought.extend(order.iter().cloned());
        orders.push((day, order));
        day += rng.random_range(1..20);
    }
    orders
}

fn history_of(orders: &[(i64, Vec<String>)]) -> ShopperHistory {
    let mut history = ShopperHistory::default();
    for (day, products) in orders {
        let mentions: Vec<ProductMention> = products
            .iter()
            .map(|id| ProductMention {
                product_id: id.clone(),
                name: None,
                category: None,
                price: None,
            })
            .collect();
        history.record(Signal::Purchase, &mentions, UnixMillis(day * DAY_MS));
    }
    history
}

#[derive(Default)]
struct Score {
    hits: f64,
    ndcg: f64,
    asked: f64,
}

impl Score {
    fn add(&mut self, ranked: &[String], wanted: &[String]) {
        self.asked += 1.0;
        let positions: Vec<usize> = ranked
            .iter()
            .take(TOP)
            .enumerate()
            .filter(|(_, id)| wanted.contains(id))
            .map(|(index, _)| index)
            .collect();
        if !positions.is_empty() {
            self.hits += 1.0;
        }
        let dcg: f64 = positions
            .iter()
            .map(|&i| 1.0 / (i as f64 + 2.0).log2())
            .sum();
        let ideal: f64 = (0..wanted.len().min(TOP))
            .map(|i| 1.0 / (i as f64 + 2.0).log2())
            .sum();
        if ideal > 0.0 {
            self.ndcg += dcg / ideal;
        }
    }

    fn rates(&self) -> (f64, f64) {
        (self.hits / self.asked, self.ndcg / self.asked)
    }
}

fn run(seed: u64, shoppers: usize, products: usize) -> [(f64, f64); 2] {
    let mut rng = SmallRng::seed_from_u64(seed);
    let catalogue = catalogue(products, &mut rng);
    let mut model = Recommender::default();
    for (c, list) in catalogue.by_category.iter().enumerate() {
        for id in list {
            model.set_product(
                product_key(id),
                Some(Product {
                    product_id: id.clone(),
                    name: id.clone(),
                    category: format!("category {c}"),
                    price: None,
                    available: true,
                }),
            );
        }
    }
    let people: Vec<Vec<(i64, Vec<String>)>> = (0..shoppers)
        .map(|_| orders(&catalogue, &mut rng))
        .collect();
    let histories: Vec<ShopperHistory> = people
        .iter()
        .map(|orders| history_of(&orders[..orders.len() - 1]))
        .collect();
    model.add_counts(histories.iter().map(Contribution::of));
    model.rank_neighbours();
    let now = UnixMillis(200 * DAY_MS);
    let (mut personal, mut popular) = (Score::default(), Score::default());
    for (orders, history) in people.iter().zip(&histories) {
        let held_out = &orders[orders.len() - 1].1;
        // Products bought before are excluded by default; a left-out
        // product bought before is not something to find.
        let wanted: Vec<String> = held_out
            .iter()
            .filter(|id| !history.purchased(product_key(id)))
            .cloned()
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let ranked = |query: Query<'_>| -> Vec<String> {
            model
                .recommend(&query)
                .into_iter()
                .map(|scored| scored.product.product_id)
                .collect()
        };
        let query = Query {
            history: Some(history),
            interests: &[],
            context: None,
            category: None,
            include_purchased: false,
            limit: TOP,
            now,
        };
        personal.add(&ranked(query), &wanted);
        let baseline = Query {
            history: Some(history),
            interests: &[],
            context: None,
            category: None,
            include_purchased: false,
            limit: TOP,
            now,
        };
        // The popularity baseline: the same exclusions, no co-occurrence.
        let popular_list: Vec<String> = ranked(Query {
            history: None,
            limit: TOP + history.interactions.len(),
            ..baseline
        })
        .into_iter()
        .filter(|id| !history.purchased(product_key(id)))
        .collect();
        popular.add(&popular_list, &wanted);
    }
    [personal.rates(), popular.rates()]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let shoppers = env_number("BENCH_SHOPPERS", 20_000);
    let products = env_number("BENCH_PRODUCTS", 2_000);
    let runs: Vec<[(f64, f64); 2]> = [11, 22, 33]
        .into_iter()
        .map(|seed| run(seed, shoppers, products))
        .collect();
    let pick = |which: usize, part: fn(&(f64, f64)) -> f64| {
        median(runs.iter().map(|run| part(&run[which])).collect())
    };
    let (hit, ndcg) = (pick(0, |r| r.0), pick(0, |r| r.1));
    let (base_hit, base_ndcg) = (pick(1, |r| r.0), pick(1, |r| r.1));
    println!(
        "shoppers {shoppers}, products {products}, leave-last-order-out, top {TOP}, median of 3 seeds"
    );
    println!("{:<22} {:>10} {:>10}", "", "hit@10", "ndcg@10");
    println!("{:<22} {hit:>10.4} {ndcg:>10.4}", "co-occurrence");
    println!(
        "{:<22} {base_hit:>10.4} {base_ndcg:>10.4}",
        "popularity baseline"
    );
    println!(
        "ratio                  {:>10.2} {:>10.2}   (target: hit rate ≥ 2.00)",
        hit / base_hit,
        ndcg / base_ndcg
    );
}
