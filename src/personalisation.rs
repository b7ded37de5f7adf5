//! The recommendation use cases: whether a person may get a personalised
//! list (consent to `personalisation`, not in a named holdout), the reads,
//! and catalogue uploads. Ranking itself is [`crate::recommend`]'s; the
//! counts it ranks by are kept by the store. Knows neither tonic nor sled.

use std::sync::Arc;

use crate::config::RecommendationsConfig;
use crate::model::{ProfileId, Purpose};
use crate::recommend::history::{PRODUCT_ID_CHARS_MAX, valid_product_id};
use crate::recommend::{Product, Query, Scored, ShopperHistory, product_key};
use crate::segments::SegmentService;
use crate::service::{ProfileLookup, ProfileService, ServiceError};
use crate::store::{ProductUpload, ProfileStore, SharedRecommender};

const LIMIT_DEFAULT: usize = 10;
const NAME_CHARS_MAX: usize = 500;
const CATEGORY_CHARS_MAX: usize = 64;
/// Interest categories the fallback draws from, strongest first.
const INTERESTS_USED: usize = 3;

/// A request for recommendations, as received.
#[derive(Debug, Clone)]
pub struct RecommendationInput {
    pub lookup: ProfileLookup,
    pub limit: usize,
    pub category: String,
    pub context_product_id: String,
    pub include_purchased: bool,
    pub holdout_segment_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recommendations {
    pub profile_id: ProfileId,
    pub items: Vec<Scored>,
    pub personalised: bool,
    /// Empty when personalised.
    pub not_personalised_reason: String,
}

/// What the recommender holds about one person, for an export.
#[derive(Debug, Clone, PartialEq)]
pub struct ShopperExport {
    pub products: Vec<ExportedProduct>,
    pub logic: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportedProduct {
    pub product_id: String,
    pub name: String,
    pub purchases: u32,
    /// UTC days since the epoch.
    pub last_purchase_day: Option<i64>,
    pub last_view_day: Option<i64>,
}

pub struct RecommendationService {
    store: Arc<dyn ProfileStore>,
    profiles: Arc<ProfileService>,
    segments: Arc<SegmentService>,
    /// The store's model, kept current by its writer.
    model: SharedRecommender,
    config: RecommendationsConfig,
}

impl RecommendationService {
    pub fn new(
        store: Arc<dyn ProfileStore>,
        profiles: Arc<ProfileService>,
        segments: Arc<SegmentService>,
        config: RecommendationsConfig,
    ) -> Self {
        RecommendationService {
            model: store.recommender(),
            store,
            profiles,
            segments,
            config,
        }
    }

    fn limit(&self, asked: usize) -> usize {
        match asked {
            0 => LIMIT_DEFAULT.min(self.config.limit_max),
            asked => asked.min(self.config.limit_max),
        }
    }

    fn check_enabled(&self) -> Result<(), ServiceError> {
        if self.config.enabled {
            Ok(())
        } else {
            Err(ServiceError::FailedPrecondition(
                "recommendations are off ([recommendations] enabled = false)".to_owned(),
            ))
        }
    }

    pub async fn recommend(
        &self,
        input: RecommendationInput,
    ) -> Result<Recommendations, ServiceError> {
        self.check_enabled()?;
        let context = match input.context_product_id.trim() {
            "" => None,
            id if valid_product_id(id) => Some(product_key(id)),
            _ => return Err(invalid_product_id("context_product_id")),
        };
        if input.category.chars().count() > CATEGORY_CHARS_MAX {
            return Err(ServiceError::invalid(
                "category",
                format!("at most {CATEGORY_CHARS_MAX} characters"),
            ));
        }
        let id = self.profiles.profile_id(input.lookup).await?;
        let shopper = self
            .store
            .shopper(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("profile {id} does not exist")))?;
        let refusal = match self.consent_refusal(&shopper.consents) {
            Some(reason) => Some(reason),
            None => {
                self.holdout_refusal(shopper.profile_id, &input.holdout_segment_id)
                    .await?
            }
        };
        let now = self.profiles.clock().now();
        let category = Some(input.category.trim().to_owned()).filter(|c| !c.is_empty());
        let limit = self.limit(input.limit);
        let interests: Vec<String> = match refusal {
            Some(_) => Vec::new(),
            None => self
                .profiles
                .computed_traits(&shopper.activity)
                .interests
                .into_iter()
                .take(INTERESTS_USED)
                .map(|(category, _)| category)
                .collect(),
        };
        let empty = ShopperHistory::default();
        let query = match &refusal {
            // The control experience uses nothing of the person's.
            Some(_) => Query {
                history: Some(&empty),
                interests: &[],
                context: None,
                category,
                include_purchased: true,
                limit,
                now,
            },
            None => Query {
                history: Some(&shopper.history),
                interests: &interests,
                context,
                category,
                include_purchased: input.include_purchased,
                limit,
                now,
            },
        };
        let items = self.read_model().recommend(&query);
        Ok(Recommendations {
            profile_id: shopper.profile_id,
            items,
            personalised: refusal.is_none(),
            not_personalised_reason: refusal.unwrap_or_default(),
        })
    }

    /// Why the person may not get a personalised list, if so: the
    /// decisions on `personalisation` over every channel; a grant on any
    /// allows it, withdrawals alone do not, and no decision follows the
    /// configuration.
    fn consent_refusal(&self, consents: &[crate::model::ConsentView]) -> Option<String> {
        let decisions: Vec<bool> = consents
            .iter()
            .filter(|consent| consent.purpose == Purpose::Personalisation)
            .map(|consent| consent.granted)
            .collect();
        if decisions.iter().any(|granted| *granted) {
            return None;
        }
        if !decisions.is_empty() {
            return Some("personalisation consent withdrawn".to_owned());
        }
        (!self.config.personalise_without_consent).then(|| "no personalisation consent".to_owned())
    }

    async fn holdout_refusal(
        &self,
        profile: ProfileId,
        segment_id: &str,
    ) -> Result<Option<String>, ServiceError> {
        let segment_id = segment_id.trim();
        if segment_id.is_empty() {
            return Ok(None);
        }
        // Unknown segments are NOT_FOUND rather than silently personalised.
        self.segments.get(segment_id)?;
        let check = self
            .segments
            .check(ProfileLookup::ProfileId(profile.to_string()))
            .await?;
        let held_out = check
            .memberships
            .iter()
            .any(|(id, holdout)| id == segment_id && *holdout);
        Ok(held_out.then(|| format!("holdout of segment {segment_id}")))
    }

    pub fn related(&self, product_id: &str, limit: usize) -> Result<Vec<Scored>, ServiceError> {
        self.check_enabled()?;
        let product_id = product_id.trim();
        if !valid_product_id(product_id) {
            return Err(invalid_product_id("product_id"));
        }
        let key = product_key(product_id);
        let model = self.read_model();
        if model.product(key).is_none() {
            return Err(ServiceError::NotFound(
                "no such product in the catalogue".to_owned(),
            ));
        }
        Ok(model.related(key, self.limit(limit), self.profiles.clock().now()))
    }

    /// Checks every entry first: one bad entry stores none.
    pub async fn put_products(
        &self,
        uploads: Vec<ProductUpload>,
    ) -> Result<(u32, u32), ServiceError> {
        self.check_enabled()?;
        if uploads.is_empty() {
            return Err(ServiceError::invalid(
                "products",
                "name at least one product",
            ));
        }
        if uploads.len() > self.config.products_per_upload_max {
            return Err(ServiceError::invalid(
                "products",
                format!(
                    "at most {} products per call",
                    self.config.products_per_upload_max
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut checked = Vec::with_capacity(uploads.len());
        for (index, upload) in uploads.into_iter().enumerate() {
            checked.push(check_upload(index, upload, &mut seen)?);
        }
        Ok(self.store.put_products(checked).await?)
    }

    /// The id of a catalogue entry, empty when unknown.
    pub fn product_id(&self, key: crate::recommend::ProductKey) -> String {
        self.read_model()
            .product(key)
            .map(|product| product.product_id.clone())
            .unwrap_or_default()
    }

    fn read_model(&self) -> std::sync::RwLockReadGuard<'_, crate::recommend::Recommender> {
        match self.model.read() {
            Ok(model) => model,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn invalid_product_id(field: &str) -> ServiceError {
    ServiceError::invalid(
        field,
        format!(
            "a product id is 1 to {PRODUCT_ID_CHARS_MAX} characters, none of them control characters"
        ),
    )
}

fn check_upload(
    index: usize,
    upload: ProductUpload,
    seen: &mut std::collections::HashSet<String>,
) -> Result<ProductUpload, ServiceError> {
    let field = |name: &str| format!("products[{index}].{name}");
    let product = upload.product;
    let product_id = product.product_id.trim().to_owned();
    if !valid_product_id(&product_id) {
        return Err(invalid_product_id(&field("product_id")));
    }
    if !seen.insert(product_id.clone()) {
        return Err(ServiceError::invalid(
            field("product_id"),
            "appears more than once in the call",
        ));
    }
    let text = |value: &str, name: &str, max: usize| -> Result<String, ServiceError> {
        let value = value.trim();
        if value.chars().count() > max || value.chars().any(char::is_control) {
            return Err(ServiceError::invalid(
                field(name),
                format!("at most {max} characters, none of them control characters"),
            ));
        }
        Ok(value.to_owned())
    };
    let name = text(&product.name, "name", NAME_CHARS_MAX)?;
    let category = text(&product.category, "category", CATEGORY_CHARS_MAX)?;
    if product
        .price
        .is_some_and(|price| !price.is_finite() || price < 0.0)
    {
        return Err(ServiceError::invalid(
            field("price"),
            "a price is a finite amount, not negative",
        ));
    }
    Ok(ProductUpload {
        product: Product {
            product_id,
            name,
            category,
            price: product.price,
            available: product.available,
        },
        available: upload.available,
    })
}

/// What the recommender holds about the person: their products, named as
/// the catalogue names them, and how recommendations are made.
pub fn shopper_export(
    store: &dyn ProfileStore,
    id: ProfileId,
) -> Result<ShopperExport, ServiceError> {
    let history = store
        .shopper(id)?
        .map(|shopper| shopper.history)
        .unwrap_or_default();
    let shared = store.recommender();
    let model = match shared.read() {
        Ok(model) => model,
        Err(poisoned) => poisoned.into_inner(),
    };
    let products = history
        .interactions
        .iter()
        .map(|interaction| {
            let product = model.product(interaction.product);
            ExportedProduct {
                product_id: product.map(|p| p.product_id.clone()).unwrap_or_default(),
                name: product.map(|p| p.name.clone()).unwrap_or_default(),
                purchases: interaction.purchases,
                last_purchase_day: interaction.purchased_day,
                last_view_day: interaction.viewed_day,
            }
        })
        .collect();
    Ok(ShopperExport {
        products,
        logic: crate::recommend::LOGIC,
    })
}
