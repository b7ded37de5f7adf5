//! Computed traits (design 3.2): aggregates kept up to date on every event
//! and merge, turned into the traits segment rules and callers read. Pure:
//! the store keeps an [`Activity`] per profile, and [`compute`] derives the
//! traits from it at read time with the current clock, so that windowed
//! counts and lifecycle stages age correctly without new events.

pub mod custom;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use custom::CustomState;

use crate::model::UnixMillis;

pub const ORDER_COMPLETED: &str = "Order Completed";
pub const EMAIL_OPENED: &str = "Email Opened";
pub const EMAIL_CLICKED: &str = "Email Clicked";
pub const PRODUCT_VIEWED: &str = "Product Viewed";
pub const PAGE_VIEWED: &str = "Page Viewed";

const DAY_MS: i64 = 86_400_000;
/// The longest window any computed trait looks at; older day buckets are
/// dropped.
pub const WINDOW_DAYS_MAX: i64 = 90;
/// Interests halve in weight every 30 days without new signals.
const INTEREST_HALF_LIFE_MS: f64 = 30.0 * DAY_MS as f64;
/// Categories kept per profile; the weakest go first.
const INTERESTS_MAX: usize = 20;
const INTEREST_ORDER_WEIGHT: f64 = 3.0;
const INTEREST_VIEW_WEIGHT: f64 = 1.0;
const INTEREST_PAGE_WEIGHT: f64 = 0.5;

/// Money summed exactly, in ten-thousandths of the currency's unit:
/// every ISO 4217 currency has at most four decimals, so amounts as sent
/// are kept whole, and a total is the decimal sum, not a running float sum
/// (`0.1 + 0.2` is `0.3`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(pub i64);

impl Money {
    const UNIT: f64 = 10_000.0;

    /// The amount sent, to the nearest ten-thousandth; `None` when it is
    /// not a finite amount a total can hold.
    pub fn from_amount(amount: f64) -> Option<Money> {
        let scaled = (amount * Money::UNIT).round();
        // i64 holds ±9.2e18; the bound keeps sums of many orders in range.
        (scaled.is_finite() && scaled.abs() < 1e15).then_some(Money(scaled as i64))
    }

    /// The nearest double to the decimal amount: what a rule's literal of
    /// the same amount parses to.
    pub fn amount(self) -> f64 {
        self.0 as f64 / Money::UNIT
    }

    /// Divided evenly, to the nearest ten-thousandth.
    fn divided(self, parts: u64) -> Money {
        let parts = i128::from(parts.max(1));
        let total = i128::from(self.0);
        let rounded = (2 * total + total.signum() * parts) / (2 * parts);
        Money(i64::try_from(rounded).unwrap_or(self.0))
    }
}

impl std::ops::AddAssign for Money {
    fn add_assign(&mut self, other: Money) {
        self.0 = self.0.saturating_add(other.0);
    }
}

/// Counts of one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub opens: u32,
    pub clicks: u32,
    pub orders: u32,
}

/// A category's interest score, as of `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interest {
    pub score: f64,
    pub at: UnixMillis,
}

impl Interest {
    fn decayed_to(self, at: UnixMillis) -> f64 {
        let elapsed = (at.0 - self.at.0).max(0) as f64;
        self.score * 0.5f64.powf(elapsed / INTEREST_HALF_LIFE_MS)
    }

    fn combine(self, other: Interest) -> Interest {
        let at = self.at.max(other.at);
        Interest {
            score: self.decayed_to(at) + other.decayed_to(at),
            at,
        }
    }
}

/// What the store keeps per profile to compute traits incrementally.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub order_count: u64,
    pub revenue: Money,
    pub first_order_at: Option<UnixMillis>,
    pub last_order_at: Option<UnixMillis>,
    pub last_seen_at: Option<UnixMillis>,
    /// Day number (days since the epoch) → counts, for the last
    /// [`WINDOW_DAYS_MAX`] days before the newest event.
    pub days: BTreeMap<i64, DayCounts>,
    pub interests: BTreeMap<String, Interest>,
    /// User-defined computed traits by name (see [`custom`]); folded in by
    /// the caller, which knows the definitions.
    pub custom: BTreeMap<String, CustomState>,
}

/// Distinct values one custom trait keeps per profile (for
/// `most_frequent`, `unique_count`, `unique_values`).
pub const CUSTOM_VALUES_MAX: usize = 100;

impl Activity {
    /// Folds one event in. Events may arrive late and out of order: every
    /// aggregate is order-independent.
    pub fn record_event(&mut self, name: &str, properties: &Map<String, Value>, at: UnixMillis) {
        self.last_seen_at = self.last_seen_at.max(Some(at));
        let day = at.0.div_euclid(DAY_MS);
        match name {
            ORDER_COMPLETED => {
                self.order_count += 1;
                self.revenue += properties
                    .get("revenue")
                    .and_then(Value::as_f64)
                    .and_then(Money::from_amount)
                    .unwrap_or_default();
                self.first_order_at = Some(self.first_order_at.map_or(at, |first| first.min(at)));
                self.last_order_at = self.last_order_at.max(Some(at));
                self.days.entry(day).or_default().orders += 1;
                let products = properties.get("products").and_then(Value::as_array);
                for product in products.into_iter().flatten() {
                    if let Some(category) = product.get("category").and_then(Value::as_str) {
                        self.add_interest(category, INTEREST_ORDER_WEIGHT, at);
                    }
                }
            }
            EMAIL_OPENED => self.days.entry(day).or_default().opens += 1,
            EMAIL_CLICKED => self.days.entry(day).or_default().clicks += 1,
            PRODUCT_VIEWED | PAGE_VIEWED => {
                let weight = if name == PRODUCT_VIEWED {
                    INTEREST_VIEW_WEIGHT
                } else {
                    INTEREST_PAGE_WEIGHT
                };
                if let Some(category) = properties.get("category").and_then(Value::as_str) {
                    self.add_interest(category, weight, at);
                }
            }
            _ => {}
        }
        self.prune();
    }

    /// The aggregates of two profiles that became one: the same as if one
    /// profile had received both event histories.
    pub fn merge(&mut self, other: &Activity) {
        self.order_count += other.order_count;
        self.revenue += other.revenue;
        self.first_order_at = match (self.first_order_at, other.first_order_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_order_at = self.last_order_at.max(other.last_order_at);
        self.last_seen_at = self.last_seen_at.max(other.last_seen_at);
        for (day, counts) in &other.days {
            let ours = self.days.entry(*day).or_default();
            ours.opens += counts.opens;
            ours.clicks += counts.clicks;
            ours.orders += counts.orders;
        }
        for (category, interest) in &other.interests {
            let merged = match self.interests.get(category) {
                Some(ours) => ours.combine(*interest),
                None => *interest,
            };
            self.interests.insert(category.clone(), merged);
        }
        for (name, state) in &other.custom {
            self.custom
                .entry(name.clone())
                .or_default()
                .merge(state, CUSTOM_VALUES_MAX);
        }
        self.prune();
    }

    fn add_interest(&mut self, category: &str, weight: f64, at: UnixMillis) {
        let category: String = category.trim().to_lowercase().chars().take(64).collect();
        if category.is_empty() {
            return;
        }
        let signal = Interest { score: weight, at };
        let combined = match self.interests.get(&category) {
            Some(existing) => existing.combine(signal),
            None => signal,
        };
        self.interests.insert(category, combined);
    }

    /// Bounds the record: day buckets beyond the longest window before the
    /// newest activity, and the weakest interests beyond the cap.
    fn prune(&mut self) {
        if let Some(newest) = self.last_seen_at {
            let oldest_kept = newest.0.div_euclid(DAY_MS) - WINDOW_DAYS_MAX;
            self.days = self.days.split_off(&oldest_kept);
        }
        if self.interests.len() > INTERESTS_MAX {
            let at = self.last_seen_at.unwrap_or_default();
            let mut ranked: Vec<(String, f64)> = self
                .interests
                .iter()
                .map(|(category, interest)| (category.clone(), interest.decayed_to(at)))
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (category, _) in ranked.into_iter().skip(INTERESTS_MAX) {
                self.interests.remove(&category);
            }
        }
    }
}

/// Lifecycle thresholds, in days since the last order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleThresholds {
    /// An order within this many days is recent: `active` (or `first_time`).
    pub active_days: i64,
    /// Beyond `active_days` and within this: `lapsing`; beyond: `inactive`.
    pub lapsing_days: i64,
}

impl Default for LifecycleThresholds {
    fn default() -> Self {
        LifecycleThresholds {
            active_days: 90,
            lapsing_days: 180,
        }
    }
}

/// The traits derived from an [`Activity`] at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedTraits {
    /// Whole days since the last order; `None` without orders.
    pub recency_days: Option<i64>,
    pub frequency: u64,
    pub monetary: f64,
    pub lifetime_value: f64,
    pub average_order_value: Option<f64>,
    pub first_order_at: Option<UnixMillis>,
    pub last_order_at: Option<UnixMillis>,
    pub email_opens_30d: u64,
    pub email_opens_90d: u64,
    pub email_clicks_30d: u64,
    pub email_clicks_90d: u64,
    pub conversions_30d: u64,
    pub conversions_90d: u64,
    /// `engaged` (opens, clicks and orders in 90 days), `clicker` (opens and
    /// clicks, no order), `opener` (opens only), `disengaged` (no opens).
    pub engagement_group: &'static str,
    /// `lead`, `first_time`, `active`, `lapsing` or `inactive`.
    pub lifecycle_stage: &'static str,
    pub last_seen_at: Option<UnixMillis>,
    /// Category → score decayed to now, strongest first.
    pub interests: Vec<(String, f64)>,
    /// 1–5 by population quintile (see [`RfmQuintiles`]); set by the
    /// caller that holds the current quintiles.
    pub rfm_scores: Option<(u8, u8, u8)>,
    /// User-defined traits by name, as of now; set by the caller that
    /// holds the definitions.
    pub custom: Vec<(String, Value)>,
}

pub fn compute(
    activity: &Activity,
    now: UnixMillis,
    lifecycle: &LifecycleThresholds,
) -> ComputedTraits {
    let today = now.0.div_euclid(DAY_MS);
    // Day buckets in the future (a clock behind the event source) count as today.
    let window = |days: i64, pick: fn(&DayCounts) -> u32| -> u64 {
        activity
            .days
            .range(today - days + 1..)
            .map(|(_, counts)| u64::from(pick(counts)))
            .sum()
    };
    let opens_90 = window(90, |c| c.opens);
    let clicks_90 = window(90, |c| c.clicks);
    let conversions_90 = window(90, |c| c.orders);
    let engagement_group = match (opens_90 > 0, clicks_90 > 0, conversions_90 > 0) {
        (_, true, true) => "engaged",
        (_, true, false) => "clicker",
        (true, false, _) => "opener",
        (false, false, _) => "disengaged",
    };
    let recency_days = activity
        .last_order_at
        .map(|last| (now.0 - last.0).max(0).div_euclid(DAY_MS));
    let lifecycle_stage = match recency_days {
        None => "lead",
        Some(days) if days > lifecycle.lapsing_days => "inactive",
        Some(days) if days > lifecycle.active_days => "lapsing",
        Some(_) if activity.order_count == 1 => "first_time",
        Some(_) => "active",
    };
    let mut interests: Vec<(String, f64)> = activity
        .interests
        .iter()
        .map(|(category, interest)| (category.clone(), interest.decayed_to(now)))
        .collect();
    interests.sort_by(|a, b| b.1.total_cmp(&a.1));
    ComputedTraits {
        recency_days,
        frequency: activity.order_count,
        monetary: activity.revenue.amount(),
        lifetime_value: activity.revenue.amount(),
        average_order_value: (activity.order_count > 0)
            .then(|| activity.revenue.divided(activity.order_count).amount()),
        first_order_at: activity.first_order_at,
        last_order_at: activity.last_order_at,
        email_opens_30d: window(30, |c| c.opens),
        email_opens_90d: opens_90,
        email_clicks_30d: window(30, |c| c.clicks),
        email_clicks_90d: clicks_90,
        conversions_30d: window(30, |c| c.orders),
        conversions_90d: conversions_90,
        engagement_group,
        lifecycle_stage,
        last_seen_at: activity.last_seen_at,
        interests,
        rfm_scores: None,
        custom: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(n: i64) -> UnixMillis {
        UnixMillis(n * DAY_MS + 3_600_000)
    }

    fn props(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn order(activity: &mut Activity, revenue: f64, at: UnixMillis) {
        activity.record_event(ORDER_COMPLETED, &props(json!({ "revenue": revenue })), at);
    }

    #[test]
    fn rfm_value_and_lifecycle_follow_orders_and_time() {
        let mut activity = Activity::default();
        order(&mut activity, 120.0, day(1000));
        order(&mut activity, 80.0, day(1030));
        order(&mut activity, 100.0, day(1060));
        let traits = compute(&activity, day(1061), &LifecycleThresholds::default());
        assert_eq!((traits.frequency, traits.monetary), (3, 300.0));
        assert_eq!(traits.average_order_value, Some(100.0));
        assert_eq!(traits.lifecycle_stage, "active");
        assert_eq!(traits.recency_days, Some(1));
        let later = compute(&activity, day(1260), &LifecycleThresholds::default());
        assert_eq!(later.lifecycle_stage, "inactive");
        let lapsing = compute(&activity, day(1200), &LifecycleThresholds::default());
        assert_eq!(lapsing.lifecycle_stage, "lapsing");
    }

    #[test]
    fn windows_drop_old_events_as_time_passes() {
        let mut activity = Activity::default();
        activity.record_event(EMAIL_OPENED, &Map::new(), day(100));
        activity.record_event(EMAIL_OPENED, &Map::new(), day(120));
        let at_121 = compute(&activity, day(121), &LifecycleThresholds::default());
        assert_eq!((at_121.email_opens_30d, at_121.email_opens_90d), (2, 2));
        let at_131 = compute(&activity, day(131), &LifecycleThresholds::default());
        assert_eq!(
            (at_131.email_opens_30d, at_131.email_opens_90d),
            (1, 2),
            "day 100 is 31 days old"
        );
        let at_211 = compute(&activity, day(211), &LifecycleThresholds::default());
        assert_eq!(at_211.email_opens_90d, 0);
        assert_eq!(at_211.engagement_group, "disengaged");
    }

    #[test]
    fn late_events_and_merges_are_order_independent() {
        let mut one = Activity::default();
        order(&mut one, 10.0, day(50));
        order(&mut one, 20.0, day(10));
        assert_eq!(one.last_order_at, Some(day(50)));
        assert_eq!(one.first_order_at, Some(day(10)));

        let mut other = Activity::default();
        order(&mut other, 30.0, day(70));
        other.record_event(EMAIL_CLICKED, &Map::new(), day(69));
        let mut merged = one.clone();
        merged.merge(&other);
        let mut single = Activity::default();
        order(&mut single, 20.0, day(10));
        single.record_event(EMAIL_CLICKED, &Map::new(), day(69));
        order(&mut single, 30.0, day(70));
        order(&mut single, 10.0, day(50));
        let now = day(71);
        let rules = LifecycleThresholds::default();
        assert_eq!(compute(&merged, now, &rules), compute(&single, now, &rules));
    }

    #[test]
    fn engagement_groups() {
        let rules = LifecycleThresholds::default();
        let mut activity = Activity::default();
        activity.record_event(EMAIL_OPENED, &Map::new(), day(5));
        activity.record_event(EMAIL_CLICKED, &Map::new(), day(5));
        assert_eq!(
            compute(&activity, day(6), &rules).engagement_group,
            "clicker"
        );
        order(&mut activity, 5.0, day(6));
        assert_eq!(
            compute(&activity, day(6), &rules).engagement_group,
            "engaged"
        );
    }

    #[test]
    fn rfm_scores_rank_against_population_quintiles() {
        let samples: Vec<RfmSample> = (0..100)
            .map(|i| RfmSample {
                last_order_day: i,
                orders: (i % 10) as u64 + 1,
                revenue: Money(i * 100_000),
            })
            .collect();
        let quintiles = RfmQuintiles::from_population(&samples, UnixMillis(0));
        let mut best = Activity::default();
        for day in 0..12 {
            order(&mut best, 1000.0, UnixMillis((day + 100) * DAY_MS));
        }
        assert_eq!(quintiles.scores(&best), Some((5, 5, 5)));
        let mut least = Activity::default();
        order(&mut least, 1.0, UnixMillis(0));
        assert_eq!(quintiles.scores(&least), Some((1, 1, 1)));
        assert_eq!(quintiles.scores(&Activity::default()), None);
    }

    #[test]
    fn money_sums_and_divides_in_whole_ten_thousandths() {
        let mut total = Money::default();
        for amount in [0.1, 0.2] {
            total += Money::from_amount(amount).expect("an amount");
        }
        assert_eq!(total.amount(), 0.3);
        assert_eq!(total.divided(2).amount(), 0.15);
        assert_eq!(Money(10_000).divided(3), Money(3_333));
        assert_eq!(Money(-20_000).divided(3), Money(-6_667));
        assert_eq!(Money::from_amount(f64::NAN), None);
        assert_eq!(Money::from_amount(1e300), None);
    }

    #[test]
    fn interests_decay_and_rank() {
        let mut activity = Activity::default();
        let view = |category: &str| props(json!({ "category": category }));
        activity.record_event(PRODUCT_VIEWED, &view("Shoes"), day(0));
        activity.record_event(PRODUCT_VIEWED, &view("bags"), day(30));
        let traits = compute(&activity, day(30), &LifecycleThresholds::default());
        assert_eq!(traits.interests[0].0, "bags");
        assert!(
            (traits.interests[1].1 - 0.5).abs() < 1e-9,
            "{:?}",
            traits.interests
        );
    }
}

/// The latest quintiles, shared by every reader of computed traits and
/// replaced by each maintenance run.
pub type RfmCache = std::sync::Arc<std::sync::RwLock<Option<RfmQuintiles>>>;

/// One customer as RFM scoring sees it, in whole units so that ties are
/// exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmSample {
    /// The UTC day (since the epoch) of the last order.
    pub last_order_day: i64,
    pub orders: u64,
    pub revenue: Money,
}

impl RfmSample {
    /// `None` for a profile without orders: it has no RFM scores.
    pub fn of(activity: &Activity) -> Option<RfmSample> {
        let last_order = activity.last_order_at?;
        (activity.order_count > 0).then(|| RfmSample {
            last_order_day: last_order.0.div_euclid(DAY_MS),
            orders: activity.order_count,
            revenue: activity.revenue,
        })
    }

    // Each score orders customers by its own measure, ties broken by the
    // other two, so that each score holds a fifth of the customers even
    // when most of them share a value (one order).
    fn recency_key(&self) -> RankKey {
        [self.last_order_day, orders_key(self.orders), self.revenue.0]
    }

    fn frequency_key(&self) -> RankKey {
        [orders_key(self.orders), self.revenue.0, self.last_order_day]
    }

    fn monetary_key(&self) -> RankKey {
        [self.revenue.0, orders_key(self.orders), self.last_order_day]
    }
}

/// Compared lexicographically: the first element is the score's measure.
pub type RankKey = [i64; 3];

fn orders_key(orders: u64) -> i64 {
    i64::try_from(orders).unwrap_or(i64::MAX)
}

/// Population quintile cut points for RFM scores, refreshed periodically.
/// Each list holds the keys of the customers at the 20th, 40th, 60th and
/// 80th percentile of that score's order. Recency is kept as the date of
/// the last order, not as days before the refresh: as time passes every
/// customer ages alike, so scores only change when orders do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RfmQuintiles {
    pub recency: Vec<RankKey>,
    pub frequency: Vec<RankKey>,
    pub monetary: Vec<RankKey>,
    pub computed_at: UnixMillis,
    /// Customers (profiles with an order) the cut points were taken from.
    pub customers: u64,
}

impl RfmQuintiles {
    /// Cut points from every customer.
    pub fn from_population(samples: &[RfmSample], at: UnixMillis) -> RfmQuintiles {
        let cuts = |key: fn(&RfmSample) -> RankKey| -> Vec<RankKey> {
            let mut keys: Vec<RankKey> = samples.iter().map(key).collect();
            keys.sort_unstable();
            if keys.is_empty() {
                return Vec::new();
            }
            // The last key of each of the lower four fifths: a key above it
            // belongs to a higher fifth; customers equal in all three
            // measures stay together.
            (1..5)
                .map(|fifth| keys[(keys.len() * fifth).div_ceil(5).saturating_sub(1)])
                .collect()
        };
        RfmQuintiles {
            recency: cuts(RfmSample::recency_key),
            frequency: cuts(RfmSample::frequency_key),
            monetary: cuts(RfmSample::monetary_key),
            computed_at: at,
            customers: samples.len() as u64,
        }
    }

    /// 1–5 scores; `None` without orders or before the first refresh.
    pub fn scores(&self, activity: &Activity) -> Option<(u8, u8, u8)> {
        let sample = RfmSample::of(activity)?;
        if [&self.recency, &self.frequency, &self.monetary]
            .iter()
            .any(|cuts| cuts.len() != 4)
        {
            return None;
        }
        // Recent customers score high; frequent and big spenders too.
        let rank = |cuts: &[RankKey], key: RankKey| {
            1 + cuts.iter().filter(|cut| key > **cut).count() as u8
        };
        Some((
            rank(&self.recency, sample.recency_key()),
            rank(&self.frequency, sample.frequency_key()),
            rank(&self.monetary, sample.monetary_key()),
        ))
    }
}
