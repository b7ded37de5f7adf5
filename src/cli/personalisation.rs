//! The operator's commands for recommendations and computed traits of
//! one's own: each is one call to a running server, answered as JSON.

use clap::Subcommand;
use serde_json::{Value, json};

use super::operations::ProfileArgs;
use super::{BearerToken, CliError, Target, channel, timestamp_json};
use crate::api::pb::{
    self, recommendation_service_client::RecommendationServiceClient,
    segment_service_client::SegmentServiceClient,
};

type Channel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>;

async fn recommender(target: &Target) -> Result<RecommendationServiceClient<Channel>, CliError> {
    Ok(RecommendationServiceClient::with_interceptor(
        channel(&target.server).await?,
        target.bearer()?,
    ))
}

async fn segments(target: &Target) -> Result<SegmentServiceClient<Channel>, CliError> {
    Ok(SegmentServiceClient::with_interceptor(
        channel(&target.server).await?,
        target.bearer()?,
    ))
}

#[derive(Subcommand)]
pub enum ProductCommand {
    /// Add or replace catalogue entries from a JSON file: an array of
    /// {"product_id", "name", "category", "price", "available"}.
    Put {
        #[command(flatten)]
        target: Target,
        /// The JSON file.
        file: std::path::PathBuf,
    },
    /// Products bought together with one product.
    Related {
        #[command(flatten)]
        target: Target,
        /// Product id.
        #[arg(long)]
        product: String,
        /// At most this many.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
}

#[derive(Subcommand)]
pub enum TraitCommand {
    /// Define (or redefine) a computed trait; it is backfilled over the
    /// stored events.
    Put {
        #[command(flatten)]
        target: Target,
        /// Letters, digits and `_`; rules read profile.computed.custom.NAME.
        #[arg(long)]
        name: String,
        /// The event aggregated, e.g. 'Order Completed'.
        #[arg(long)]
        event: String,
        /// count, sum, avg, min, max, first, last, most_frequent,
        /// unique_count or unique_values.
        #[arg(long)]
        aggregation: String,
        /// The property read, a dotted path (optional for count).
        #[arg(long, default_value = "")]
        property: String,
        /// Trailing window in days; 0 is all time.
        #[arg(long, default_value_t = 0)]
        window_days: u32,
        /// CEL condition over the event's `properties`, e.g.
        /// 'properties.currency == "GBP"'.
        #[arg(long = "where", default_value = "")]
        condition: String,
    },
    /// Show one computed trait.
    Get {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
    },
    /// List every computed trait.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a computed trait.
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
    },
}

/// Recommendations for one person.
#[derive(clap::Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    profile: ProfileArgs,
    /// At most this many.
    #[arg(long, default_value_t = 10)]
    limit: u32,
    /// Only products of this category.
    #[arg(long, default_value = "")]
    category: String,
    /// The product the person is looking at.
    #[arg(long, default_value = "")]
    context_product: String,
    /// Keep products the person already bought.
    #[arg(long)]
    include_purchased: bool,
    /// A segment whose holdout members get the non-personalised list.
    #[arg(long, default_value = "")]
    holdout_segment: String,
}

fn recommendation_json(recommendation: &pb::Recommendation) -> Value {
    json!({
        "product": recommendation.product.as_ref().map(product_json),
        "score": recommendation.score,
        "reason": recommendation.reason().as_str_name(),
        "explanation": recommendation.explanation,
        "because_of_product_id": recommendation.because_of_product_id,
    })
}

fn product_json(product: &pb::Product) -> Value {
    json!({
        "product_id": product.product_id,
        "name": product.name,
        "category": product.category,
        "price": product.price,
        "available": product.available,
    })
}

fn trait_json(definition: &pb::ComputedTrait) -> Value {
    json!({
        "name": definition.name,
        "event": definition.event,
        "aggregation": definition.aggregation,
        "property": definition.property,
        "window_days": definition.window_days,
        "where": definition.r#where,
        "ready": definition.ready,
        "created_at": timestamp_json(definition.created_at.as_ref()),
        "updated_at": timestamp_json(definition.updated_at.as_ref()),
    })
}

pub async fn recommend(args: RecommendArgs) -> Result<Value, CliError> {
    use pb::get_recommendations_request::Lookup;
    let request = pb::GetRecommendationsRequest {
        lookup: Some(args.profile.lookup(Lookup::ProfileId, Lookup::Identifier)?),
        limit: args.limit,
        category: args.category,
        context_product_id: args.context_product,
        include_purchased: args.include_purchased,
        holdout_segment_id: args.holdout_segment,
    };
    let answer = recommender(&args.target)
        .await?
        .get_recommendations(request)
        .await?
        .into_inner();
    Ok(json!({
        "profile_id": answer.profile_id,
        "personalised": answer.personalised,
        "not_personalised_reason": answer.not_personalised_reason,
        "recommendations": answer.recommendations.iter().map(recommendation_json).collect::<Vec<_>>(),
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductFile {
    product_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    category: String,
    price: Option<f64>,
    available: Option<bool>,
}

pub async fn products(command: ProductCommand) -> Result<Value, CliError> {
    match command {
        ProductCommand::Put { target, file } => {
            let text = std::fs::read_to_string(&file).map_err(|error| {
                CliError::Usage(format!("cannot read {}: {error}", file.display()))
            })?;
            let entries: Vec<ProductFile> = serde_json::from_str(&text).map_err(|error| {
                CliError::Usage(format!(
                    "{}: expected a JSON array of products ({error})",
                    file.display()
                ))
            })?;
            let products = entries
                .into_iter()
                .map(|entry| pb::Product {
                    product_id: entry.product_id,
                    name: entry.name,
                    category: entry.category,
                    price: entry.price,
                    available: entry.available,
                })
                .collect();
            let answer = recommender(&target)
                .await?
                .put_products(pb::PutProductsRequest { products })
                .await?
                .into_inner();
            Ok(json!({"created": answer.created, "updated": answer.updated}))
        }
        ProductCommand::Related {
            target,
            product,
            limit,
        } => {
            let answer = recommender(&target)
                .await?
                .get_related_products(pb::GetRelatedProductsRequest {
                    product_id: product,
                    limit,
                })
                .await?
                .into_inner();
            Ok(json!({
                "products": answer.products.iter().map(recommendation_json).collect::<Vec<_>>(),
            }))
        }
    }
}

pub async fn traits(command: TraitCommand) -> Result<Value, CliError> {
    match command {
        TraitCommand::Put {
            target,
            name,
            event,
            aggregation,
            property,
            window_days,
            condition,
        } => {
            let request = pb::PutComputedTraitRequest {
                computed_trait: Some(pb::ComputedTrait {
                    name,
                    event,
                    aggregation,
                    property,
                    window_days,
                    r#where: condition,
                    ..Default::default()
                }),
            };
            let answer = segments(&target)
                .await?
                .put_computed_trait(request)
                .await?
                .into_inner();
            Ok(json!({
                "created": answer.created,
                "computed_trait": answer.computed_trait.as_ref().map(trait_json),
            }))
        }
        TraitCommand::Get { target, name } => {
            let answer = segments(&target)
                .await?
                .get_computed_trait(pb::GetComputedTraitRequest { name })
                .await?
                .into_inner();
            Ok(answer
                .computed_trait
                .as_ref()
                .map(trait_json)
                .unwrap_or(Value::Null))
        }
        TraitCommand::List { target } => {
            let answer = segments(&target)
                .await?
                .list_computed_traits(pb::ListComputedTraitsRequest {})
                .await?
                .into_inner();
            Ok(json!({
                "computed_traits": answer.computed_traits.iter().map(trait_json).collect::<Vec<_>>(),
            }))
        }
        TraitCommand::Delete { target, name } => {
            segments(&target)
                .await?
                .delete_computed_trait(pb::DeleteComputedTraitRequest { name: name.clone() })
                .await?;
            Ok(json!({"deleted": name}))
        }
    }
}
