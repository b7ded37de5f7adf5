//! What the recommender keeps: each person's product history (in their
//! profile record) and the catalogue (its own table). Histories change with
//! the calls that touch them (track, merge, unmerge, erasure), and every
//! change is noted in the writer's overlay. The shared counts (popularity
//! per product, co-occurrence per pair) are not stored: they are the sum
//! of what the stored histories contribute, built at open, and once a group
//! is durable the in-memory [`Recommender`] moves them by exactly the
//! change of every history the group noted.

use std::sync::{Arc, RwLock};

use prost::Message;
use serde_json::{Map, Value};

use super::StoreError;
use super::engine::{Batch, Engine};
use super::keys::{self, PRODUCT, RETIRED_PAIR, RETIRED_POPULARITY, RETIRED_SHOPPER};
use super::overlay::{CallWrites, GroupWrites};
use super::records::{InteractionRecord, ProfileRecord, ShopperRecord, decode};
use crate::model::{ProfileId, UnixMillis};
use crate::recommend::contribution::Contribution;
use crate::recommend::history::{Interaction, ProductMention, mentions, product_key};
use crate::recommend::{Product, ProductKey, Recommender, ShopperHistory};

/// Shared between the writer, which applies durable changes, and readers.
pub type SharedRecommender = Arc<RwLock<Recommender>>;

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

#[cfg(test)]
fn retired_shopper_key(id: ProfileId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = RETIRED_SHOPPER;
    key[1..].copy_from_slice(&id.0.to_be_bytes());
    key
}

fn product_record_key(product: ProductKey) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = PRODUCT;
    key[1..].copy_from_slice(&product.to_be_bytes());
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

/// The person's history as their profile record holds it.
pub fn history_in(record: &ProfileRecord) -> ShopperHistory {
    record
        .shopper
        .as_ref()
        .map(ShopperHistory::from)
        .unwrap_or_default()
}

/// Gives the record a new history and notes the change for the counts.
fn set_history(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    record: &mut ProfileRecord,
    history: ShopperHistory,
) {
    let before = history_in(record);
    if before == history {
        return;
    }
    record.shopper = (!history.is_empty()).then(|| ShopperRecord::from(&history));
    writes.note_history_change(id, before, history);
}

/// Folds a tracked event into the person's history and teaches the
/// catalogue what the event says of its products. `catalogue` is the
/// committed catalogue, which spares reading the records of products the
/// event says nothing new of.
pub(super) fn record_event(
    writes: &mut CallWrites<'_, '_>,
    catalogue: &Recommender,
    id: ProfileId,
    record: &mut ProfileRecord,
    event: &str,
    properties: &Map<String, Value>,
    at: UnixMillis,
) -> Result<(), StoreError> {
    let Some((signal, products)) = mentions(event, properties) else {
        return Ok(());
    };
    for mention in &products {
        learn_product(writes, catalogue, mention)?;
    }
    let mut history = history_in(record);
    history.record(signal, &products, at);
    set_history(writes, id, record, history);
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

    pub fn store(self, writes: &mut CallWrites<'_, '_>, id: ProfileId, record: &mut ProfileRecord) {
        set_history(writes, id, record, self.0);
    }
}

/// Moves the absorbed profile's history into the survivor's; the absorbed
/// record goes.
pub(super) fn absorb(
    writes: &mut CallWrites<'_, '_>,
    survivor: ProfileId,
    record: &mut ProfileRecord,
    absorbed_id: ProfileId,
    theirs: ShopperHistory,
) {
    if theirs.is_empty() {
        return;
    }
    let mut ours = history_in(record);
    ours.merge(&theirs);
    set_history(writes, survivor, record, ours);
    writes.note_history_change(absorbed_id, theirs, ShopperHistory::default());
}

/// Erasure: the history goes with the record, and with it (once the group
/// is durable) the person's share of every count.
pub(super) fn forget(writes: &mut CallWrites<'_, '_>, id: ProfileId, record: &ProfileRecord) {
    let history = history_in(record);
    if !history.is_empty() {
        writes.note_history_change(id, history, ShopperHistory::default());
    }
}

/// The product records a tracked event may read: those of the products
/// it mentions that the committed catalogue does not know as it says.
pub(super) fn keys_read(
    catalogue: &Recommender,
    event: &str,
    properties: &Map<String, Value>,
) -> Vec<Vec<u8>> {
    let Some((_, products)) = mentions(event, properties) else {
        return Vec::new();
    };
    products
        .iter()
        .filter_map(|mention| {
            let product = product_key(&mention.product_id);
            (!catalogue_knows(catalogue, product, mention))
                .then(|| product_record_key(product).to_vec())
        })
        .collect()
}

/// Whether the committed catalogue already holds what the mention says.
fn catalogue_knows(catalogue: &Recommender, product: ProductKey, mention: &ProductMention) -> bool {
    catalogue
        .product(product)
        .is_some_and(|known| known.agrees_with(mention))
}

fn learn_product(
    writes: &mut CallWrites<'_, '_>,
    catalogue: &Recommender,
    mention: &ProductMention,
) -> Result<(), StoreError> {
    let product = product_key(&mention.product_id);
    let key = product_record_key(product);
    // An earlier call of the group may have changed the record since.
    if catalogue_knows(catalogue, product, mention) && !writes.is_written(&key) {
        return Ok(());
    }
    let existing: Option<ProductRecord> = match writes.get(&key)? {
        Some(bytes) => Some(decode(&bytes, "product")?),
        None => None,
    };
    let mut record = existing.clone().unwrap_or_else(|| ProductRecord {
        product_id: mention.product_id.clone(),
        ..ProductRecord::default()
    });
    // Names come from catalogue uploads only: a name an order mentions is
    // part of that person's event, sealed with it, and would outlive their
    // erasure here in the clear.
    if !record.uploaded {
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

/// What the in-memory model is told once a group is durable.
#[derive(Debug, Default)]
pub(super) struct ModelChanges {
    products: Vec<(ProductKey, Option<Product>)>,
    /// Every history the group changed, as it was before the group and as
    /// it is now: a history changed by several calls counts once.
    histories: Vec<(ShopperHistory, ShopperHistory)>,
}

/// The group's changes to the catalogue and the histories.
pub(super) fn model_changes(group: &mut GroupWrites<'_>) -> Result<ModelChanges, StoreError> {
    let mut products = Vec::new();
    for (key, value) in group.changes_under(&[PRODUCT]) {
        if let Some(product) = key.get(1..).and_then(key_u64) {
            let record = match value {
                Some(bytes) => Some(decode::<ProductRecord>(&bytes, "product")?.to_product()),
                None => None,
            };
            products.push((product, record));
        }
    }
    Ok(ModelChanges {
        products,
        histories: group.take_history_changes(),
    })
}

impl ModelChanges {
    /// The catalogue's part, applied at once: the writer's next calls read
    /// the catalogue (see [`record_event`]).
    pub fn apply_catalogue(&mut self, recommender: &SharedRecommender) {
        if self.products.is_empty() {
            return;
        }
        let mut model = write_model(recommender);
        for (key, product) in self.products.drain(..) {
            model.set_product(key, product);
        }
    }

    /// Whether the counts move: the part [`ModelChanges::apply_counts`]
    /// does, which may run on another thread.
    pub fn moves_counts(&self) -> bool {
        !self.histories.is_empty()
    }

    pub fn apply_counts(self, recommender: &SharedRecommender) {
        let mut total = Contribution::default();
        for (before, after) in &self.histories {
            total.add(Contribution::of_change(before, after));
        }
        total.drop_zeros();
        if !total.is_empty() {
            write_model(recommender).apply(&total);
        }
    }
}

fn write_model(recommender: &SharedRecommender) -> std::sync::RwLockWriteGuard<'_, Recommender> {
    recommender
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The in-memory model at start-up: the catalogue, and the counts summed
/// over every stored history.
pub fn load(tree: &dyn Engine) -> Result<Recommender, StoreError> {
    let mut model = Recommender::default();
    for entry in tree.scan_prefix(&[PRODUCT]) {
        let (key, value) = entry?;
        if let Some(product) = key.get(1..).and_then(key_u64) {
            let record: ProductRecord = decode(&value, "product")?;
            model.set_product(product, Some(record.to_product()));
        }
    }
    let mut contributions = Vec::new();
    for entry in tree.scan_prefix(&[keys::PROFILE]) {
        let (_, value) = entry?;
        let record: ProfileRecord = decode(&value, "profile")?;
        if let Some(shopper) = &record.shopper {
            contributions.push(Contribution::of(&ShopperHistory::from(shopper)));
        }
        if contributions.len() >= 4096 {
            model.add_counts(contributions.drain(..));
        }
    }
    model.add_counts(contributions);
    model.rank_neighbours();
    Ok(model)
}

/// Earlier versions stored the counts, and the histories apart from the
/// profile records: the counts are derived in memory now, and each history
/// moves into its profile's record.
pub fn remove_retired_tables(tree: &dyn Engine) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    for entry in tree.scan_prefix(&[RETIRED_SHOPPER]) {
        let (key, value) = entry?;
        batch.remove(key.clone());
        let Some(id) = key.get(1..).and_then(key_u64).map(ProfileId) else {
            continue;
        };
        let Some(bytes) = tree.get(&keys::profile(id))? else {
            continue;
        };
        let mut record = ProfileRecord::from_bytes(&bytes)?;
        if record.shopper.is_none() {
            record.shopper = Some(decode(&value, "shopper history")?);
            batch.insert(keys::profile(id), record.into_bytes());
        }
        if batch.len() >= 1000 {
            tree.commit(std::mem::take(&mut batch))?;
        }
    }
    for prefix in [RETIRED_POPULARITY, RETIRED_PAIR] {
        for entry in tree.scan_prefix(&[prefix]) {
            let (key, _) = entry?;
            batch.remove(key);
            if batch.len() >= 1000 {
                tree.commit(std::mem::take(&mut batch))?;
            }
        }
    }
    if !batch.is_empty() {
        tree.commit(batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_earlier_versions_are_folded_in_or_removed_at_open() -> Result<(), StoreError> {
        let tree = crate::store::engine::sled::SledEngine::temporary()?;
        tree.put_now(&[RETIRED_PAIR, 1, 2], &[0u8; 8])?;
        tree.put_now(&[RETIRED_POPULARITY, 1], &[0u8; 2])?;
        let history = ShopperHistory {
            interactions: vec![Interaction {
                product: 7,
                purchased_day: Some(3),
                viewed_day: None,
                purchases: 1,
            }],
        };
        let id = ProfileId(1);
        tree.put_now(
            &retired_shopper_key(id),
            &ShopperRecord::from(&history).encode_to_vec(),
        )?;
        tree.put_now(&keys::profile(id), &ProfileRecord::default().into_bytes())?;
        remove_retired_tables(&tree)?;
        for retired in [RETIRED_PAIR, RETIRED_POPULARITY, RETIRED_SHOPPER] {
            assert_eq!(tree.scan_prefix(&[retired]).count(), 0);
        }
        let bytes = tree.get(&keys::profile(id))?.unwrap_or_default();
        assert_eq!(history_in(&ProfileRecord::from_bytes(&bytes)?), history);
        Ok(())
    }
}
