//! What one person bought and viewed, as the recommender sees it: one entry
//! per product, bounded to the most recent, folded from events like the
//! computed traits so that merge and unmerge need no special case.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::computed::{ORDER_COMPLETED, PRODUCT_VIEWED};
use crate::model::UnixMillis;

/// Products kept per person; the least recent go first. Bounds both the
/// record and the pairs one person adds to the co-occurrence counts.
pub const HISTORY_PRODUCTS_MAX: usize = 20;
pub const PRODUCT_ID_CHARS_MAX: usize = 200;
const NAME_CHARS_MAX: usize = 500;
const CATEGORY_CHARS_MAX: usize = 64;
const DAY_MS: i64 = 86_400_000;

/// A product id as the store keys it: the first 8 bytes of its SHA-256,
/// fixed-size whatever the id, and as unlikely to collide as a random u64
/// (one in ~10^10 for a million products).
pub type ProductKey = u64;

pub fn product_key(product_id: &str) -> ProductKey {
    let digest = Sha256::digest(product_id.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// A product id events and uploads may use: non-empty, bounded, no
/// control characters (they would make unreadable reasons and exports).
pub fn valid_product_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= PRODUCT_ID_CHARS_MAX
        && !id.chars().any(char::is_control)
}

/// Categories are compared as interests are: trimmed, lower case, bounded.
pub fn category_key(category: &str) -> String {
    category
        .trim()
        .to_lowercase()
        .chars()
        .take(CATEGORY_CHARS_MAX)
        .collect()
}

/// What an event says about the person and a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Purchase,
    View,
}

/// One product named by an event, with what the event says of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductMention {
    pub product_id: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub price: Option<f64>,
}

/// The products an `Order Completed` (its `products`) or `Product Viewed`
/// (the event itself) names, following the Segment e-commerce spec:
/// `product_id`, or `sku` when there is none. Other events name none.
pub fn mentions(
    event: &str,
    properties: &Map<String, Value>,
) -> Option<(Signal, Vec<ProductMention>)> {
    match event {
        ORDER_COMPLETED => {
            let products = properties.get("products").and_then(Value::as_array)?;
            let mentions: Vec<ProductMention> = products
                .iter()
                .filter_map(Value::as_object)
                .filter_map(mention_of)
                .collect();
            (!mentions.is_empty()).then_some((Signal::Purchase, mentions))
        }
        PRODUCT_VIEWED => mention_of(properties).map(|mention| (Signal::View, vec![mention])),
        _ => None,
    }
}

fn mention_of(properties: &Map<String, Value>) -> Option<ProductMention> {
    let id = ["product_id", "sku"]
        .iter()
        .find_map(|name| match properties.get(*name) {
            Some(Value::String(text)) => Some(text.trim().to_owned()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        })?;
    if !valid_product_id(&id) {
        return None;
    }
    let text = |name: &str, max: usize| {
        properties
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(|text| text.chars().filter(|c| !c.is_control()).take(max).collect())
    };
    Some(ProductMention {
        product_id: id,
        name: text("name", NAME_CHARS_MAX),
        category: text("category", CATEGORY_CHARS_MAX),
        price: properties
            .get("price")
            .and_then(Value::as_f64)
            .filter(|price| price.is_finite() && *price >= 0.0),
    })
}

/// One product in a person's history. Days (since the epoch, UTC) rather
/// than milliseconds: the co-occurrence weights depend on them, and a
/// second view the same day then changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interaction {
    pub product: ProductKey,
    pub purchased_day: Option<i64>,
    pub viewed_day: Option<i64>,
    pub purchases: u32,
}

impl Interaction {
    /// The day of the latest purchase or view.
    pub fn last_day(&self) -> i64 {
        self.purchased_day.max(self.viewed_day).unwrap_or(i64::MIN)
    }

    pub fn purchased(&self) -> bool {
        self.purchases > 0
    }

    fn combine(&mut self, other: &Interaction) {
        self.purchased_day = self.purchased_day.max(other.purchased_day);
        self.viewed_day = self.viewed_day.max(other.viewed_day);
        self.purchases = self.purchases.saturating_add(other.purchases);
    }
}

/// A person's products, in product key order, at most
/// [`HISTORY_PRODUCTS_MAX`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShopperHistory {
    pub interactions: Vec<Interaction>,
}

impl ShopperHistory {
    pub fn is_empty(&self) -> bool {
        self.interactions.is_empty()
    }

    pub fn get(&self, product: ProductKey) -> Option<&Interaction> {
        self.interactions
            .binary_search_by_key(&product, |i| i.product)
            .ok()
            .map(|index| &self.interactions[index])
    }

    pub fn purchased(&self, product: ProductKey) -> bool {
        self.get(product).is_some_and(Interaction::purchased)
    }

    /// Folds one event in; events may arrive late and out of order.
    pub fn record(&mut self, signal: Signal, products: &[ProductMention], at: UnixMillis) {
        let day = at.0.div_euclid(DAY_MS);
        for mention in products {
            let interaction = match signal {
                Signal::Purchase => Interaction {
                    product: product_key(&mention.product_id),
                    purchased_day: Some(day),
                    viewed_day: None,
                    purchases: 1,
                },
                Signal::View => Interaction {
                    product: product_key(&mention.product_id),
                    purchased_day: None,
                    viewed_day: Some(day),
                    purchases: 0,
                },
            };
            self.add(&interaction);
        }
        self.prune();
    }

    /// The history of two profiles that became one.
    pub fn merge(&mut self, other: &ShopperHistory) {
        for interaction in &other.interactions {
            self.add(interaction);
        }
        self.prune();
    }

    fn add(&mut self, interaction: &Interaction) {
        match self
            .interactions
            .binary_search_by_key(&interaction.product, |i| i.product)
        {
            Ok(index) => self.interactions[index].combine(interaction),
            Err(index) => self.interactions.insert(index, *interaction),
        }
    }

    /// Keeps the most recent products; purchases before views of the same
    /// day, then the product key, so that the result depends on the set
    /// alone, never on the order events came in.
    fn prune(&mut self) {
        if self.interactions.len() <= HISTORY_PRODUCTS_MAX {
            return;
        }
        let mut ranked = std::mem::take(&mut self.interactions);
        ranked.sort_by_key(|i| {
            (
                std::cmp::Reverse(i.last_day()),
                std::cmp::Reverse(i.purchases),
                i.product,
            )
        });
        ranked.truncate(HISTORY_PRODUCTS_MAX);
        ranked.sort_by_key(|i| i.product);
        self.interactions = ranked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(ids: &[&str]) -> Map<String, Value> {
        let products: Vec<Value> = ids.iter().map(|id| json!({ "product_id": id })).collect();
        match json!({ "products": products }) {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn orders_and_views_name_their_products() {
        let (signal, products) = mentions(ORDER_COMPLETED, &order(&["a", "b"])).expect("products");
        assert_eq!(signal, Signal::Purchase);
        assert_eq!(products.len(), 2);
        let viewed = json!({ "sku": 42, "name": " Boot ", "category": "Shoes", "price": 9.5 });
        let (signal, products) =
            mentions(PRODUCT_VIEWED, viewed.as_object().expect("object")).expect("product");
        assert_eq!(signal, Signal::View);
        assert_eq!(products[0].product_id, "42");
        assert_eq!(products[0].name.as_deref(), Some("Boot"));
        assert_eq!(products[0].price, Some(9.5));
        assert!(mentions("Email Opened", &order(&["a"])).is_none());
        assert!(mentions(ORDER_COMPLETED, &order(&[""])).is_none());
    }

    #[test]
    fn histories_are_bounded_and_independent_of_event_order() {
        let mut forward = ShopperHistory::default();
        let mut backward = ShopperHistory::default();
        let days: Vec<i64> = (0..30).collect();
        let ids: Vec<String> = days.iter().map(|d| format!("p{d}")).collect();
        let event = |d: i64| {
            let (_, products) =
                mentions(ORDER_COMPLETED, &order(&[ids[d as usize].as_str()])).expect("order");
            (products, UnixMillis(d * DAY_MS))
        };
        for &d in &days {
            let (products, at) = event(d);
            forward.record(Signal::Purchase, &products, at);
        }
        for &d in days.iter().rev() {
            let (products, at) = event(d);
            backward.record(Signal::Purchase, &products, at);
        }
        assert_eq!(forward.interactions.len(), HISTORY_PRODUCTS_MAX);
        assert_eq!(forward, backward);
        assert!(forward.get(product_key("p29")).is_some());
        assert!(forward.get(product_key("p0")).is_none());
    }
}
