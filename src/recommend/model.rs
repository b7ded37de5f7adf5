//! The recommender's shared counts, in memory: the catalogue, each
//! product's popularity, the exact co-occurrence count of every pair, and
//! each product's strongest neighbours. The counts are derived state, the
//! sum of what every stored history contributes: built from the histories
//! at start-up and moved by every durable change of one, so they are never
//! written to disk and an erased history leaves nothing behind in them.
//! Reads rank from this alone, without touching the database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::contribution::{Contribution, DAYS_PER_WEEK};
use super::history::{ProductKey, ProductMention, ShopperHistory, category_key};
use crate::model::UnixMillis;

/// Neighbours kept per product, the strongest by co-occurrence count.
pub const NEIGHBOURS_MAX: usize = 50;
/// Popularity halves every four weeks; weeks older than this count for
/// nothing.
const POPULARITY_HALF_LIFE_WEEKS: f64 = 4.0;
pub const POPULARITY_WEEKS: i64 = 26;
/// Shrinks similarities resting on few people towards zero: a pair seen
/// once is worth half of what its cosine says (one purchase weighs 1000).
const SHRINKAGE: f64 = 1000.0;
/// A person's own purchases anchor twice as strongly as views; the context
/// product stronger still.
const PURCHASE_ANCHOR: f64 = 1.0;
const VIEW_ANCHOR: f64 = 0.5;
const CONTEXT_ANCHOR: f64 = 2.0;
/// A person's older interactions anchor less, halving every 60 days.
const ANCHOR_HALF_LIFE_DAYS: f64 = 60.0;
/// Popular products listed per category and overall.
const POPULAR_LISTED: usize = 200;
const DAY_MS: i64 = 86_400_000;

/// A catalogue entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Product {
    pub product_id: String,
    pub name: String,
    pub category: String,
    pub price: Option<f64>,
    pub available: bool,
}

impl Product {
    /// Whether a mention in an event says nothing this entry does not.
    pub fn agrees_with(&self, mention: &ProductMention) -> bool {
        mention.name.as_ref().is_none_or(|name| *name == self.name)
            && mention
                .category
                .as_ref()
                .is_none_or(|category| *category == self.category)
            && mention.price.is_none_or(|price| Some(price) == self.price)
    }

    /// The product's name, or its id when it has none.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.product_id
        } else {
            &self.name
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Entry {
    product: Option<Product>,
    mass: i64,
    weeks: BTreeMap<i64, i64>,
    /// Unordered; at most [`NEIGHBOURS_MAX`].
    neighbours: Vec<(ProductKey, i64)>,
}

/// Why a product is recommended.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Bought or viewed together with this product of the person's.
    Together {
        anchor: ProductKey,
        purchased: bool,
    },
    Interest {
        category: String,
    },
    Popular {
        category: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub product: Product,
    pub score: f64,
    pub reason: Reason,
    /// The reason in words.
    pub explanation: String,
}

/// What to rank for.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub history: Option<&'a ShopperHistory>,
    /// Interest categories, strongest first.
    pub interests: &'a [String],
    pub context: Option<ProductKey>,
    pub category: Option<String>,
    pub include_purchased: bool,
    pub limit: usize,
    pub now: UnixMillis,
}

#[derive(Debug, Default)]
struct PopularLists {
    /// The generation of the counts and the week they were ranked for.
    built_for: (u64, i64),
    overall: Vec<(ProductKey, f64)>,
    by_category: HashMap<String, Vec<(ProductKey, f64)>>,
}

#[derive(Debug, Default)]
struct PopularCache {
    lists: Option<Arc<PopularLists>>,
    built_at: Option<Instant>,
    took: Duration,
    building: bool,
}

#[derive(Debug, Default)]
pub struct Recommender {
    entries: HashMap<ProductKey, Entry>,
    /// Every pair some history holds, lower key first, with its count.
    pairs: HashMap<(ProductKey, ProductKey), i64>,
    /// Bumped by every change; popular lists are rebuilt when it moved.
    generation: u64,
    popular: Mutex<PopularCache>,
}

/// Sizes for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecommenderStats {
    pub products: u64,
    pub neighbour_links: u64,
    pub approximate_bytes: u64,
}

impl Recommender {
    pub fn set_product(&mut self, key: ProductKey, product: Option<Product>) {
        self.entries.entry(key).or_default().product = product;
        self.generation += 1;
    }

    /// Moves the counts by one change of the stored histories.
    pub fn apply(&mut self, change: &Contribution) {
        self.add_popularity(change);
        for (&(first, second), &amount) in &change.pairs {
            let count = self.add_pair(first, second, amount);
            self.place_neighbour(first, second, count);
            self.place_neighbour(second, first, count);
        }
        self.generation += 1;
    }

    /// Adds whole histories' contributions without ranking neighbours: at
    /// start-up, before [`Recommender::rank_neighbours`].
    pub fn add_counts(&mut self, contributions: impl IntoIterator<Item = Contribution>) {
        for change in contributions {
            self.add_popularity(&change);
            for ((first, second), amount) in change.pairs {
                self.add_pair(first, second, amount);
            }
        }
        self.generation += 1;
    }

    /// Every product's neighbours from the exact counts: the strongest,
    /// ties to the lower key.
    pub fn rank_neighbours(&mut self) {
        for entry in self.entries.values_mut() {
            entry.neighbours.clear();
        }
        for (&(first, second), &count) in &self.pairs {
            self.entries
                .entry(first)
                .or_default()
                .neighbours
                .push((second, count));
            self.entries
                .entry(second)
                .or_default()
                .neighbours
                .push((first, count));
        }
        for entry in self.entries.values_mut() {
            entry
                .neighbours
                .sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            entry.neighbours.truncate(NEIGHBOURS_MAX);
            entry.neighbours.shrink_to_fit();
        }
        self.generation += 1;
    }

    fn add_popularity(&mut self, change: &Contribution) {
        for (&product, &amount) in &change.mass {
            self.entries.entry(product).or_default().mass += amount;
        }
        for (&(product, week), &amount) in &change.weeks {
            let weeks = &mut self.entries.entry(product).or_default().weeks;
            let total = weeks.entry(week).or_default();
            *total += amount;
            if *total == 0 {
                weeks.remove(&week);
            }
        }
    }

    /// Returns the pair's new count.
    fn add_pair(&mut self, first: ProductKey, second: ProductKey, amount: i64) -> i64 {
        let key = (first.min(second), first.max(second));
        let count = self.pairs.entry(key).or_default();
        *count += amount;
        let count = *count;
        if count <= 0 {
            self.pairs.remove(&key);
        }
        count
    }

    /// Keeps `other` among the neighbours of `of` if its count earns it a
    /// place. A neighbour pushed out of a full list comes back when its
    /// count next moves, or at start-up.
    fn place_neighbour(&mut self, of: ProductKey, other: ProductKey, count: i64) {
        let neighbours = &mut self.entries.entry(of).or_default().neighbours;
        match neighbours.iter().position(|(key, _)| *key == other) {
            Some(index) if count <= 0 => {
                neighbours.swap_remove(index);
            }
            Some(index) => neighbours[index].1 = count,
            None if count <= 0 => {}
            None if neighbours.len() < NEIGHBOURS_MAX => neighbours.push((other, count)),
            None => {
                // Full: the new pair displaces the weakest if stronger.
                if let Some((index, _)) = neighbours
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (key, count))| (*count, std::cmp::Reverse(*key)))
                    .filter(|(_, (_, weakest))| *weakest < count)
                {
                    neighbours[index] = (other, count);
                }
            }
        }
    }

    /// The exact count of a pair.
    pub fn pair_count(&self, first: ProductKey, second: ProductKey) -> i64 {
        let key = (first.min(second), first.max(second));
        self.pairs.get(&key).copied().unwrap_or(0)
    }

    pub fn product(&self, key: ProductKey) -> Option<&Product> {
        self.entries.get(&key)?.product.as_ref()
    }

    pub fn stats(&self) -> RecommenderStats {
        let links: usize = self.entries.values().map(|e| e.neighbours.len()).sum();
        let text: usize = self
            .entries
            .values()
            .filter_map(|e| e.product.as_ref())
            .map(|p| p.product_id.len() + p.name.len() + p.category.len())
            .sum();
        let weeks: usize = self.entries.values().map(|e| e.weeks.len()).sum();
        // A hash map slot holds its entry and one control byte.
        let pair_slot = std::mem::size_of::<((ProductKey, ProductKey), i64)>() + 1;
        RecommenderStats {
            products: self.entries.len() as u64,
            neighbour_links: links as u64,
            approximate_bytes: (self.entries.capacity() * (std::mem::size_of::<Entry>() + 9)
                + self.pairs.capacity() * pair_slot
                + links * 16
                + weeks * 32
                + text) as u64,
        }
    }

    /// Cosine of the two products' buyer-and-viewer weights, shrunk when
    /// few people stand behind it: best-sellers do not outrank what is
    /// bought together just by being bought by everyone.
    fn similarity(&self, mass_of: i64, other: ProductKey, count: i64) -> f64 {
        let mass_other = self.entries.get(&other).map_or(0, |e| e.mass);
        if mass_of <= 0 || mass_other <= 0 || count <= 0 {
            return 0.0;
        }
        let count = count as f64;
        count / ((mass_of as f64) * (mass_other as f64)).sqrt() * (count / (count + SHRINKAGE))
    }

    fn recommendable(&self, key: ProductKey, category: Option<&str>) -> Option<&Product> {
        let product = self.product(key)?;
        let in_category = category.is_none_or(|wanted| category_key(&product.category) == wanted);
        (product.available && in_category).then_some(product)
    }

    /// Ranked products for one person (or, without a history, for anyone).
    pub fn recommend(&self, query: &Query<'_>) -> Vec<Scored> {
        let category = query.category.as_deref().map(category_key);
        let category = category.as_deref().filter(|c| !c.is_empty());
        let today = query.now.0.div_euclid(DAY_MS);
        let excluded = |key: ProductKey| {
            Some(key) == query.context
                || (!query.include_purchased
                    && query.history.is_some_and(|history| history.purchased(key)))
        };

        let mut anchors: Vec<(ProductKey, f64, bool)> = Vec::new();
        if let Some(context) = query.context {
            anchors.push((context, CONTEXT_ANCHOR, false));
        }
        for interaction in query.history.map_or(&[][..], |h| &h.interactions) {
            let base = if interaction.purchased() {
                PURCHASE_ANCHOR
            } else {
                VIEW_ANCHOR
            };
            let age = (today - interaction.last_day()).max(0) as f64;
            let recency = 0.5f64.powf(age / ANCHOR_HALF_LIFE_DAYS);
            anchors.push((interaction.product, base * recency, interaction.purchased()));
        }

        // Per candidate: total score, and the anchor that gave it most.
        let mut scores: HashMap<ProductKey, (f64, ProductKey, f64, bool)> = HashMap::new();
        for &(anchor, anchor_weight, purchased) in &anchors {
            let Some(entry) = self.entries.get(&anchor) else {
                continue;
            };
            for &(other, count) in &entry.neighbours {
                if excluded(other) || self.recommendable(other, category).is_none() {
                    continue;
                }
                let part = anchor_weight * self.similarity(entry.mass, other, count);
                if part <= 0.0 {
                    continue;
                }
                let slot = scores.entry(other).or_insert((0.0, anchor, 0.0, purchased));
                slot.0 += part;
                if part > slot.2 {
                    (slot.1, slot.2, slot.3) = (anchor, part, purchased);
                }
            }
        }
        let mut ranked: Vec<(ProductKey, (f64, ProductKey, f64, bool))> =
            scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(&b.0)));
        let mut chosen: HashSet<ProductKey> = HashSet::new();
        let mut list = Vec::with_capacity(query.limit);
        for (key, (score, anchor, _, purchased)) in ranked.into_iter().take(query.limit) {
            let Some(product) = self.product(key) else {
                continue;
            };
            let anchor_label = self.product(anchor).map_or("", Product::label);
            let verb = if purchased || Some(anchor) == query.context {
                "bought"
            } else {
                "viewed"
            };
            chosen.insert(key);
            list.push(Scored {
                product: product.clone(),
                score,
                reason: Reason::Together { anchor, purchased },
                explanation: format!("{verb} together with {anchor_label}"),
            });
        }

        let interests: Vec<&str> = match category {
            Some(category) => vec![category],
            None => query.interests.iter().map(String::as_str).collect(),
        };
        let popular = self.popular_lists(query.now);
        for interest in interests {
            if list.len() >= query.limit {
                break;
            }
            let Some(products) = popular.by_category.get(interest) else {
                continue;
            };
            for &(key, score) in products {
                if list.len() >= query.limit {
                    break;
                }
                if chosen.contains(&key) || excluded(key) {
                    continue;
                }
                let Some(product) = self.recommendable(key, None) else {
                    continue;
                };
                chosen.insert(key);
                let reason = if query.category.is_some() && query.interests.is_empty() {
                    Reason::Popular {
                        category: Some(interest.to_owned()),
                    }
                } else {
                    Reason::Interest {
                        category: interest.to_owned(),
                    }
                };
                let explanation = match &reason {
                    Reason::Interest { category } => {
                        format!("popular in {category}, which you browse")
                    }
                    _ => format!("popular in {interest}"),
                };
                list.push(Scored {
                    product: product.clone(),
                    score,
                    reason,
                    explanation,
                });
            }
        }
        if category.is_none() {
            for &(key, score) in &popular.overall {
                if list.len() >= query.limit {
                    break;
                }
                if chosen.contains(&key) || excluded(key) {
                    continue;
                }
                let Some(product) = self.recommendable(key, None) else {
                    continue;
                };
                chosen.insert(key);
                list.push(Scored {
                    product: product.clone(),
                    score,
                    reason: Reason::Popular { category: None },
                    explanation: "popular now".to_owned(),
                });
            }
        }
        list
    }

    /// Products bought or viewed together with one product, strongest
    /// first; then, to fill the list, what is popular in its category.
    pub fn related(&self, key: ProductKey, limit: usize, now: UnixMillis) -> Vec<Scored> {
        let Some(entry) = self.entries.get(&key) else {
            return Vec::new();
        };
        let label = entry.product.as_ref().map_or("", Product::label).to_owned();
        let mut ranked: Vec<(ProductKey, f64)> = entry
            .neighbours
            .iter()
            .filter(|(other, _)| self.recommendable(*other, None).is_some())
            .map(|&(other, count)| (other, self.similarity(entry.mass, other, count)))
            .filter(|(_, score)| *score > 0.0)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut list: Vec<Scored> = ranked
            .into_iter()
            .take(limit)
            .filter_map(|(other, score)| {
                Some(Scored {
                    product: self.product(other)?.clone(),
                    score,
                    reason: Reason::Together {
                        anchor: key,
                        purchased: true,
                    },
                    explanation: format!("bought together with {label}"),
                })
            })
            .collect();
        let category = entry
            .product
            .as_ref()
            .map(|p| category_key(&p.category))
            .filter(|c| !c.is_empty());
        if let Some(category) = category {
            let mut chosen: HashSet<ProductKey> = list
                .iter()
                .map(|s| super::history::product_key(&s.product.product_id))
                .collect();
            chosen.insert(key);
            let popular = self.popular_lists(now);
            for &(other, score) in popular.by_category.get(&category).into_iter().flatten() {
                if list.len() >= limit {
                    break;
                }
                if !chosen.insert(other) {
                    continue;
                }
                let Some(product) = self.recommendable(other, None) else {
                    continue;
                };
                list.push(Scored {
                    product: product.clone(),
                    score,
                    reason: Reason::Popular {
                        category: Some(category.clone()),
                    },
                    explanation: format!("popular in {category}"),
                });
            }
        }
        list
    }

    /// Popularity now of every product with any, overall and per category.
    /// Rebuilt when the counts moved or a week turned, but never more often
    /// than keeps rebuilds under a twentieth of the time (with a large
    /// catalogue a list may lag the counts by a moment). One reader
    /// rebuilds; the others go on with the previous lists meanwhile.
    fn popular_lists(&self, now: UnixMillis) -> Arc<PopularLists> {
        let this_week = now.0.div_euclid(DAY_MS).div_euclid(DAYS_PER_WEEK);
        let wanted = (self.generation, this_week);
        {
            let mut cache = match self.popular.lock() {
                Ok(cache) => cache,
                Err(poisoned) => poisoned.into_inner(),
            };
            let current = cache.lists.clone();
            let fresh = current
                .as_ref()
                .is_some_and(|lists| lists.built_for == wanted);
            let week_moved = current
                .as_ref()
                .is_none_or(|lists| lists.built_for.1 != this_week);
            let rested = cache
                .built_at
                .is_none_or(|at| at.elapsed() >= cache.took * 20);
            match current {
                Some(lists) if fresh || cache.building || !(rested || week_moved) => return lists,
                None if cache.building => return Arc::new(PopularLists::default()),
                _ => cache.building = true,
            }
        }
        let started = Instant::now();
        let lists = Arc::new(self.build_popular(wanted));
        let mut cache = match self.popular.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.lists = Some(lists.clone());
        cache.built_at = Some(Instant::now());
        cache.took = started.elapsed();
        cache.building = false;
        lists
    }

    fn build_popular(&self, built_for: (u64, i64)) -> PopularLists {
        let this_week = built_for.1;
        let mut overall = Vec::new();
        let mut by_category: HashMap<String, Vec<(ProductKey, f64)>> = HashMap::new();
        for (&key, entry) in &self.entries {
            let Some(product) = entry.product.as_ref().filter(|p| p.available) else {
                continue;
            };
            let score = popularity(&entry.weeks, this_week);
            if score <= 0.0 {
                continue;
            }
            overall.push((key, score));
            let category = category_key(&product.category);
            if !category.is_empty() {
                by_category.entry(category).or_default().push((key, score));
            }
        }
        let rank = |list: &mut Vec<(ProductKey, f64)>| {
            list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            list.truncate(POPULAR_LISTED);
        };
        rank(&mut overall);
        by_category.values_mut().for_each(rank);
        PopularLists {
            built_for,
            overall,
            by_category,
        }
    }
}

/// Weight of recent interest, halving every four weeks.
pub fn popularity(weeks: &BTreeMap<i64, i64>, this_week: i64) -> f64 {
    weeks
        .range(this_week - POPULARITY_WEEKS..)
        .map(|(&week, &amount)| {
            let age = (this_week - week).max(0) as f64;
            amount as f64 * 0.5f64.powf(age / POPULARITY_HALF_LIFE_WEEKS)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::history::{ProductMention, Signal, product_key};

    fn history(orders: &[(i64, &[&str])]) -> ShopperHistory {
        let mut history = ShopperHistory::default();
        for (day, ids) in orders {
            let products: Vec<ProductMention> = ids
                .iter()
                .map(|id| ProductMention {
                    product_id: (*id).to_owned(),
                    name: None,
                    category: None,
                    price: None,
                })
                .collect();
            history.record(Signal::Purchase, &products, UnixMillis(day * DAY_MS));
        }
        history
    }

    fn related(model: &Recommender, id: &str) -> Vec<(ProductKey, i64)> {
        let mut neighbours = model.entries[&product_key(id)].neighbours.clone();
        neighbours.sort_unstable();
        neighbours
    }

    /// The counts moved change by change (as the writer does) equal those
    /// built at once from the final histories (as at start-up), and a
    /// history taken away leaves nothing behind.
    #[test]
    fn changes_applied_one_by_one_equal_the_counts_built_at_once() {
        let people = [
            history(&[(10, &["a", "b"]), (12, &["c"])]),
            history(&[(10, &["a", "b"])]),
            history(&[(20, &["a", "c"]), (50, &["d"])]),
        ];
        let mut moved = Recommender::default();
        for person in &people {
            moved.apply(&Contribution::of(person));
        }
        let mut gone = people[2].clone();
        gone.interactions.clear();
        moved.apply(&Contribution::of_change(&people[2], &gone));

        let mut built = Recommender::default();
        built.add_counts(people[..2].iter().map(Contribution::of));
        built.rank_neighbours();

        assert_eq!(moved.pairs, built.pairs);
        for id in ["a", "b", "c"] {
            assert_eq!(related(&moved, id), related(&built, id), "{id}");
            let (m, b) = (
                &moved.entries[&product_key(id)],
                &built.entries[&product_key(id)],
            );
            assert_eq!((m.mass, &m.weeks), (b.mass, &b.weeks), "{id}");
        }
        assert_eq!(moved.pair_count(product_key("a"), product_key("d")), 0);
        assert!(moved.entries[&product_key("d")].weeks.is_empty());
        assert_eq!(
            built.pair_count(product_key("b"), product_key("a")),
            2 * crate::recommend::contribution::PURCHASE_WEIGHT
        );
    }
}
