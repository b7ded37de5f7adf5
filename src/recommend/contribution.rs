//! What one person adds to the shared counts the recommender ranks by: a
//! pure function of their history, in whole numbers, so that the store can
//! add a person's contribution on every change and subtract exactly the
//! same amount on erasure, merge or unmerge. After an erasure the counts
//! are those of a store that never saw the person.

use std::collections::{BTreeMap, BTreeSet};

use super::history::{Interaction, ProductKey, ShopperHistory};

/// A purchase weighs four views.
pub const PURCHASE_WEIGHT: i64 = 1000;
pub const VIEW_WEIGHT: i64 = 250;
/// Two products of one person count together only if the person's
/// interactions with them lie this close in time.
pub const PAIR_WINDOW_DAYS: i64 = 90;
/// Their weight halves every this many days apart.
const PAIR_HALF_LIFE_DAYS: f64 = 30.0;
/// Popularity is kept per week of the person's latest interaction.
pub const DAYS_PER_WEEK: i64 = 7;

/// Parts per million of full weight, by days apart: integer weights
/// computed once, so that every machine adds and subtracts the same
/// amounts.
fn decay_ppm(days_apart: i64) -> i64 {
    (1_000_000.0 * 0.5f64.powf(days_apart as f64 / PAIR_HALF_LIFE_DAYS)).round() as i64
}

pub fn weight(interaction: &Interaction) -> i64 {
    if interaction.purchased() {
        PURCHASE_WEIGHT
    } else {
        VIEW_WEIGHT
    }
}

/// The weight one person gives a pair of their products: full for two
/// purchases the same day (one order), less for views and for
/// interactions further apart, none beyond the window.
pub fn pair_weight(first: &Interaction, second: &Interaction) -> i64 {
    let days_apart = (first.last_day() - second.last_day()).abs();
    if days_apart > PAIR_WINDOW_DAYS {
        return 0;
    }
    weight(first) * weight(second) / PURCHASE_WEIGHT * decay_ppm(days_apart) / 1_000_000
}

/// A pair is kept once, lower key first.
pub fn pair(first: ProductKey, second: ProductKey) -> (ProductKey, ProductKey) {
    (first.min(second), first.max(second))
}

/// Amounts to add to the shared counts (negative ones to subtract).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    pub pairs: BTreeMap<(ProductKey, ProductKey), i64>,
    /// Per product: the weight of the people who bought or viewed it.
    pub mass: BTreeMap<ProductKey, i64>,
    /// Per product and week of the latest interaction: the same weights,
    /// for popularity now.
    pub weeks: BTreeMap<(ProductKey, i64), i64>,
}

impl Contribution {
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty() && self.mass.is_empty() && self.weeks.is_empty()
    }

    /// The change of the shared counts when a person's history goes from
    /// `before` to `after`. Only products whose entry changed are visited,
    /// so a new view costs one pass over the history, not all its pairs.
    pub fn of_change(before: &ShopperHistory, after: &ShopperHistory) -> Contribution {
        let changed: BTreeSet<ProductKey> = before
            .interactions
            .iter()
            .chain(&after.interactions)
            .filter(|i| before.get(i.product) != after.get(i.product))
            .map(|i| i.product)
            .collect();
        let mut change = Contribution::default();
        change.add_touching(after, &changed, 1);
        change.add_touching(before, &changed, -1);
        change.drop_zeros();
        change
    }

    /// Adds another change to this one; amounts that cancel stay as zeros.
    pub fn add(&mut self, other: Contribution) {
        for (pair, amount) in other.pairs {
            *self.pairs.entry(pair).or_default() += amount;
        }
        for (product, amount) in other.mass {
            *self.mass.entry(product).or_default() += amount;
        }
        for (week, amount) in other.weeks {
            *self.weeks.entry(week).or_default() += amount;
        }
    }

    /// Everything a history adds, as if it had just appeared.
    pub fn of(history: &ShopperHistory) -> Contribution {
        Contribution::of_change(&ShopperHistory::default(), history)
    }

    fn add_touching(
        &mut self,
        history: &ShopperHistory,
        changed: &BTreeSet<ProductKey>,
        sign: i64,
    ) {
        let interactions = &history.interactions;
        for (index, interaction) in interactions.iter().enumerate() {
            let touched = changed.contains(&interaction.product);
            if touched {
                let amount = sign * weight(interaction);
                *self.mass.entry(interaction.product).or_default() += amount;
                let week = interaction.last_day().div_euclid(DAYS_PER_WEEK);
                *self.weeks.entry((interaction.product, week)).or_default() += amount;
            }
            for other in &interactions[index + 1..] {
                if !touched && !changed.contains(&other.product) {
                    continue;
                }
                let amount = pair_weight(interaction, other);
                if amount != 0 {
                    *self
                        .pairs
                        .entry(pair(interaction.product, other.product))
                        .or_default() += sign * amount;
                }
            }
        }
    }

    /// Forgets amounts that cancelled out.
    pub fn drop_zeros(&mut self) {
        self.pairs.retain(|_, amount| *amount != 0);
        self.mass.retain(|_, amount| *amount != 0);
        self.weeks.retain(|_, amount| *amount != 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UnixMillis;
    use crate::recommend::history::{ProductMention, Signal, product_key};

    const DAY: i64 = 86_400_000;

    fn mention(id: &str) -> ProductMention {
        ProductMention {
            product_id: id.to_owned(),
            name: None,
            category: None,
            price: None,
        }
    }

    fn history(events: &[(Signal, &[&str], i64)]) -> ShopperHistory {
        let mut history = ShopperHistory::default();
        for (signal, ids, day) in events {
            let products: Vec<ProductMention> = ids.iter().map(|id| mention(id)).collect();
            history.record(*signal, &products, UnixMillis(day * DAY));
        }
        history
    }

    #[test]
    fn one_order_pairs_its_products_at_full_weight() {
        let one = history(&[(Signal::Purchase, &["a", "b"], 100)]);
        let counts = Contribution::of(&one);
        let key = pair(product_key("a"), product_key("b"));
        assert_eq!(counts.pairs.get(&key), Some(&PURCHASE_WEIGHT));
        assert_eq!(counts.mass.get(&product_key("a")), Some(&PURCHASE_WEIGHT));
        let apart = history(&[(Signal::Purchase, &["a"], 100), (Signal::View, &["b"], 130)]);
        assert_eq!(Contribution::of(&apart).pairs.get(&key), Some(&125));
        let far = history(&[
            (Signal::Purchase, &["a"], 100),
            (Signal::Purchase, &["b"], 300),
        ]);
        assert_eq!(Contribution::of(&far).pairs.get(&key), None);
    }

    #[test]
    fn changes_add_up_to_the_whole_and_undo_exactly() {
        let steps: [(Signal, &[&str], i64); 4] = [
            (Signal::Purchase, &["a", "b"], 10),
            (Signal::View, &["c"], 12),
            (Signal::View, &["a"], 40),
            (Signal::Purchase, &["c", "d"], 41),
        ];
        let mut total = Contribution::default();
        let mut current = ShopperHistory::default();
        for step in steps {
            let mut next = current.clone();
            next.record(
                step.0,
                &[step.1.iter().map(|id| mention(id)).collect::<Vec<_>>()].concat(),
                UnixMillis(step.2 * DAY),
            );
            total.add(Contribution::of_change(&current, &next));
            current = next;
        }
        total.drop_zeros();
        assert_eq!(total, Contribution::of(&current));
        total.add(Contribution::of_change(
            &current,
            &ShopperHistory::default(),
        ));
        total.drop_zeros();
        assert!(total.is_empty(), "{total:?}");
    }
}
