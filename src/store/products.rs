//! The recommender's tables: each person's product history, the catalogue,
//! and the shared counts (popularity per product, co-occurrence per pair).
//! Histories change with the calls that touch them (track, merge, unmerge,
//! erasure); at the end of each group the counts move by exactly the
//! change of every history the group touched, in the same atomic batch,
//! and once the group is durable the in-memory [`Recommender`] is told.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use prost::Message;
use serde_json::{Map, Value};

use super::StoreError;
use super::keys::{PAIR, POPULARITY, PRODUCT, SHOPPER};
use super::overlay::{CallWrites, GroupWrites};
use super::records::decode;
use crate::model::{ProfileId, UnixMillis};
use crate::recommend::contribution::Contribution;
use crate::recommend::history::{Interaction, ProductMention, mentions, product_key};
use crate::recommend::model::POPULARITY_WEEKS;
use crate::recommend::{Product, ProductKey, Recommender, ShopperHistory};

/// Shared between the writer, which applies durable changes, and readers.
pub type SharedRecommender = Arc<RwLock<Recommender>>;

#[derive(Clone, PartialEq, Message)]
pub struct ShopperRecord {
    #[prost(message, repeated, tag = "1")]
    pub interactions: Vec<InteractionRecord>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InteractionRecord {
    #[prost(fixed64, tag = "1")]
    pub product: u64,
    #[prost(sint64, optional, tag = "2")]
    pub purchased_day: Option<i64>,
    #[prost(sint64, optional, tag = "3")]
    pub viewed_day: Option<i64>,
    #[prost(uint32, tag = "4")]
    pub purchases: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProductRecord {
    #[prost(string, tag = "1")]
    pub product_id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub category: String,
    #[prost(double, optional, tag = "4")]
    pub price: Option<f64>,
    #[prost(bool, tag = "5")]
    pub unavailable: bool,
    /// Set by an upload: events no longer change name, category or price.
    #[prost(bool, tag = "6")]
    pub uploaded: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PopularityRecord {
    #[prost(sint64, tag = "1")]
    pub mass: i64,
    /// Week numbers and the weight of each, in week order.
    #[prost(sint64, repeated, tag = "2")]
    pub weeks: Vec<i64>,
    #[prost(sint64, repeated, tag = "3")]
    pub amounts: Vec<i64>,
}

pub fn shopper_key(id: ProfileId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = SHOPPER;
    key[1..].copy_from_slice(&id.0.to_be_bytes());
    key
}

fn product_record_key(product: ProductKey) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = PRODUCT;
    key[1..].copy_from_slice(&product.to_be_bytes());
    key
}

fn popularity_key(product: ProductKey) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = POPULARITY;
    key[1..].copy_from_slice(&product.to_be_bytes());
    key
}

fn pair_key(first: ProductKey, second: ProductKey) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = PAIR;
    key[1..9].copy_from_slice(&first.to_be_bytes());
    key[9..].copy_from_slice(&second.to_be_bytes());
    key
}

fn key_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl From<&ShopperRecord> for ShopperHistory {
    fn from(record: &ShopperRecord) -> Self {
        let mut interactions: Vec<Interaction> = record
            .interactions
            .iter()
            .map(|i| Interaction {
                product: i.product,
                purchased_day: i.purchased_day,
                viewed_day: i.viewed_day,
                purchases: i.purchases,
            })
            .collect();
        interactions.sort_by_key(|i| i.product);
        interactions.dedup_by_key(|i| i.product);
        ShopperHistory { interactions }
    }
}

impl From<&ShopperHistory> for ShopperRecord {
    fn from(history: &ShopperHistory) -> Self {
        ShopperRecord {
            interactions: history
                .interactions
                .iter()
                .map(|i| InteractionRecord {
                    product: i.product,
                    purchased_day: i.purchased_day,
                    viewed_day: i.viewed_day,
                    purchases: i.purchases,
                })
                .collect(),
        }
    }
}

impl ProductRecord {
    pub fn to_product(&self) -> Product {
        Product {
            product_id: self.product_id.clone(),
            name: self.name.clone(),
            category: self.category.clone(),
            price: self.price,
            available: !self.unavailable,
        }
    }
}

pub fn decode_history(bytes: &[u8]) -> Result<ShopperHistory, StoreError> {
    let record: ShopperRecord = decode(bytes, "shopper history")?;
    Ok(ShopperHistory::from(&record))
}

pub(super) fn history_of(
    writes: &CallWrites<'_, '_>,
    id: ProfileId,
) -> Result<ShopperHistory, StoreError> {
    match writes.get(&shopper_key(id))? {
        Some(bytes) => decode_history(&bytes),
        None => Ok(ShopperHistory::default()),
    }
}

pub(super) fn put_history(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    history: &ShopperHistory,
) {
    if history.is_empty() {
        writes.remove(shopper_key(id));
    } else {
        writes.insert(
            shopper_key(id),
            ShopperRecord::from(history).encode_to_vec(),
        );
    }
}

/// Folds a tracked event into the person's history and teaches the
/// catalogue what the event says of its products.
pub(super) fn record_event(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    event: &str,
    properties: &Map<String, Value>,
    at: UnixMillis,
) -> Result<(), StoreError> {
    let Some((signal, products)) = mentions(event, properties) else {
        return Ok(());
    };
    for mention in &products {
        learn_product(writes, mention)?;
    }
    let mut history = history_of(writes, id)?;
    history.record(signal, &products, at);
    put_history(writes, id, &history);
    Ok(())
}

/// The history an unmerged side keeps, rebuilt from its events.
#[derive(Debug, Default)]
pub(super) struct HistoryBuilder(ShopperHistory);

impl HistoryBuilder {
    pub fn add(&mut self, event: &str, properties: &Map<String, Value>, at: UnixMillis) {
        if let Some((signal, products)) = mentions(event, properties) {
            self.0.record(signal, &products, at);
        }
    }

    pub fn store(self, writes: &mut CallWrites<'_, '_>, id: ProfileId) {
        put_history(writes, id, &self.0);
    }
}

/// Moves the absorbed profile's history into the survivor's.
pub(super) fn absorb(
    writes: &mut CallWrites<'_, '_>,
    survivor: ProfileId,
    absorbed: ProfileId,
) -> Result<(), StoreError> {
    let theirs = history_of(writes, absorbed)?;
    if theirs.is_empty() {
        return Ok(());
    }
    let mut ours = history_of(writes, survivor)?;
    ours.merge(&theirs);
    put_history(writes, survivor, &ours);
    writes.remove(shopper_key(absorbed));
    Ok(())
}

/// Erasure: the history goes, and with it (at the end of the group) the
/// person's share of every count.
pub(super) fn forget(writes: &mut CallWrites<'_, '_>, id: ProfileId) {
    writes.remove(shopper_key(id));
}

fn learn_product(
    writes: &mut CallWrites<'_, '_>,
    mention: &ProductMention,
) -> Result<(), StoreError> {
    let key = product_record_key(product_key(&mention.product_id));
    let existing: Option<ProductRecord> = match writes.get(&key)? {
        Some(bytes) => Some(decode(&bytes, "product")?),
        None => None,
    };
    let mut record = existing.clone().unwrap_or_else(|| ProductRecord {
        product_id: mention.product_id.clone(),
        ..ProductRecord::default()
    });
    if !record.uploaded {
        if let Some(name) = &mention.name {
            record.name.clone_from(name);
        }
        if let Some(category) = &mention.category {
            record.category.clone_from(category);
        }
        if mention.price.is_some() {
            record.price = mention.price;
        }
    }
    if existing.as_ref() != Some(&record) {
        writes.insert(key, record.encode_to_vec());
    }
    Ok(())
}

/// Catalogue entries as uploaded; `available` absent leaves it as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductUpload {
    pub product: Product,
    pub available: Option<bool>,
}

/// Returns (created, updated).
pub(super) fn put_products(
    writes: &mut CallWrites<'_, '_>,
    uploads: &[ProductUpload],
) -> Result<(u32, u32), StoreError> {
    let (mut created, mut updated) = (0, 0);
    for upload in uploads {
        let product = &upload.product;
        let key = product_record_key(product_key(&product.product_id));
        let existing: Option<ProductRecord> = match writes.get(&key)? {
            Some(bytes) => Some(decode(&bytes, "product")?),
            None => None,
        };
        let unavailable = match (upload.available, &existing) {
            (Some(available), _) => !available,
            (None, Some(record)) => record.unavailable,
            (None, None) => false,
        };
        let record = ProductRecord {
            product_id: product.product_id.clone(),
            name: product.name.clone(),
            category: product.category.clone(),
            price: product.price,
            unavailable,
            uploaded: true,
        };
        if existing.is_some() {
            updated += 1;
        } else {
            created += 1;
        }
        writes.insert(key, record.encode_to_vec());
    }
    Ok((created, updated))
}

/// Moves the shared counts by the change of every history the group
/// touched. Runs once per group, after its calls: a history changed by
/// several calls of the group is compared once, before against after.
pub(super) fn update_counts(group: &mut GroupWrites<'_>) -> Result<(), StoreError> {
    let mut total = Contribution::default();
    for (key, after) in group.changes_under(&[SHOPPER]) {
        let before = match group.committed(&key)? {
            Some(bytes) => decode_history(&bytes)?,
            None => ShopperHistory::default(),
        };
        let after = match after {
            Some(bytes) => decode_history(&bytes)?,
            None => ShopperHistory::default(),
        };
        total.add(Contribution::of_change(&before, &after));
    }
    if total.is_empty() {
        return Ok(());
    }
    let mut writes = group.call();
    for ((first, second), amount) in total.pairs {
        if amount == 0 {
            continue;
        }
        let key = pair_key(first, second);
        let count = match writes.get(&key)? {
            Some(bytes) => decode_count(&bytes)?,
            None => 0,
        } + amount;
        if count > 0 {
            writes.insert(key, count.to_be_bytes().to_vec());
        } else {
            writes.remove(key);
        }
    }
    let mut popularity: BTreeMap<ProductKey, (i64, BTreeMap<i64, i64>)> = BTreeMap::new();
    for (product, amount) in total.mass {
        popularity.entry(product).or_default().0 += amount;
    }
    for ((product, week), amount) in total.weeks {
        *popularity
            .entry(product)
            .or_default()
            .1
            .entry(week)
            .or_default() += amount;
    }
    for (product, (mass_change, week_changes)) in popularity {
        if mass_change == 0 && week_changes.values().all(|amount| *amount == 0) {
            continue;
        }
        let key = popularity_key(product);
        let (mut mass, mut weeks) = match writes.get(&key)? {
            Some(bytes) => decode_popularity(&bytes)?,
            None => (0, BTreeMap::new()),
        };
        mass += mass_change;
        for (week, amount) in week_changes {
            *weeks.entry(week).or_default() += amount;
        }
        weeks.retain(|_, amount| *amount > 0);
        // Weeks beyond the popularity horizon of the newest one count for
        // nothing; subtracting later from a week dropped here is skipped.
        if let Some(&newest) = weeks.keys().next_back() {
            weeks = weeks.split_off(&(newest - POPULARITY_WEEKS));
        }
        if mass == 0 && weeks.is_empty() {
            writes.remove(key);
        } else {
            let record = PopularityRecord {
                mass,
                weeks: weeks.keys().copied().collect(),
                amounts: weeks.values().copied().collect(),
            };
            writes.insert(key, record.encode_to_vec());
        }
    }
    writes.commit();
    Ok(())
}

fn decode_count(bytes: &[u8]) -> Result<i64, StoreError> {
    let raw = key_u64(bytes).ok_or_else(|| StoreError::Corrupt {
        what: "co-occurrence count",
        reason: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(raw as i64)
}

fn decode_popularity(bytes: &[u8]) -> Result<(i64, BTreeMap<i64, i64>), StoreError> {
    let record: PopularityRecord = decode(bytes, "product popularity")?;
    let weeks = record.weeks.into_iter().zip(record.amounts).collect();
    Ok((record.mass, weeks))
}

/// A change of one recommender table, to tell the in-memory model once
/// the group is durable.
pub(super) enum ModelChange {
    Product(ProductKey, Option<Product>),
    Popularity(ProductKey, i64, BTreeMap<i64, i64>),
    Pair(ProductKey, ProductKey, i64),
}

/// The group's changes to the catalogue and the counts.
pub(super) fn model_changes(group: &GroupWrites<'_>) -> Result<Vec<ModelChange>, StoreError> {
    let mut changes = Vec::new();
    for (key, value) in group.changes_under(&[PRODUCT]) {
        if let Some(product) = key.get(1..).and_then(key_u64) {
            let record = match value {
                Some(bytes) => Some(decode::<ProductRecord>(&bytes, "product")?.to_product()),
                None => None,
            };
            changes.push(ModelChange::Product(product, record));
        }
    }
    for (key, value) in group.changes_under(&[POPULARITY]) {
        if let Some(product) = key.get(1..).and_then(key_u64) {
            let (mass, weeks) = match value {
                Some(bytes) => decode_popularity(&bytes)?,
                None => (0, BTreeMap::new()),
            };
            changes.push(ModelChange::Popularity(product, mass, weeks));
        }
    }
    for (key, value) in group.changes_under(&[PAIR]) {
        if let (Some(first), Some(second)) = (
            key.get(1..9).and_then(key_u64),
            key.get(9..17).and_then(key_u64),
        ) {
            let count = match value {
                Some(bytes) => decode_count(&bytes)?,
                None => 0,
            };
            changes.push(ModelChange::Pair(first, second, count));
        }
    }
    Ok(changes)
}

pub(super) fn apply_model_changes(recommender: &SharedRecommender, changes: Vec<ModelChange>) {
    if changes.is_empty() {
        return;
    }
    let mut model = match recommender.write() {
        Ok(model) => model,
        Err(poisoned) => poisoned.into_inner(),
    };
    for change in changes {
        match change {
            ModelChange::Product(key, product) => model.set_product(key, product),
            ModelChange::Popularity(key, mass, weeks) => model.set_popularity(key, mass, weeks),
            ModelChange::Pair(first, second, count) => model.set_pair(first, second, count),
        }
    }
}

/// The in-memory model from the stored tables, at start-up.
pub fn load(tree: &sled::Tree) -> Result<Recommender, StoreError> {
    let mut model = Recommender::default();
    for entry in tree.scan_prefix([PRODUCT]) {
        let (key, value) = entry?;
        if let Some(product) = key.get(1..).and_then(key_u64) {
            let record: ProductRecord = decode(&value, "product")?;
            model.set_product(product, Some(record.to_product()));
        }
    }
    for entry in tree.scan_prefix([POPULARITY]) {
        let (key, value) = entry?;
        if let Some(product) = key.get(1..).and_then(key_u64) {
            let (mass, weeks) = decode_popularity(&value)?;
            model.set_popularity(product, mass, weeks);
        }
    }
    for entry in tree.scan_prefix([PAIR]) {
        let (key, value) = entry?;
        if let (Some(first), Some(second)) = (
            key.get(1..9).and_then(key_u64),
            key.get(9..17).and_then(key_u64),
        ) {
            model.set_pair(first, second, decode_count(&value)?);
        }
    }
    Ok(model)
}
