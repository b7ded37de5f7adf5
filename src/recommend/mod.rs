//! Product recommendations (design 4a). Pure: [`history`] folds a person's
//! orders and views into a bounded history, [`contribution`] turns a
//! change of history into exact changes of the shared co-occurrence and
//! popularity counts, and [`model`] ranks from an in-memory view of those
//! counts. The store keeps the histories and counts, and applies every
//! change in the same atomic batch as the call that caused it.

pub mod contribution;
pub mod history;
pub mod model;

pub use history::{ProductKey, ShopperHistory, product_key};
pub use model::{Product, Query, Reason, Recommender, RecommenderStats, Scored};

/// How recommendations are made, in words, for subject-access exports
/// (GDPR Art. 15(1)(h)).
pub const LOGIC: &str = "Products are recommended from what you bought and viewed (the last \
20 products): products that other people bought or viewed close in time to the same products \
rank first, weighted so that best-sellers do not outrank everything else; then products \
popular in the categories you browse; then products popular now. Your purchases and views \
count towards what is recommended to others only as part of totals over all customers. \
Recommendations are personalised only with your consent to personalisation, and not while \
you are in a control group.";
