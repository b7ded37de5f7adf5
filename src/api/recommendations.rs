use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller::caller_name;
use super::convert::profile_lookup;
use super::pb::{self, recommendation_service_server::RecommendationService as RecommendationRpc};
use super::to_status;
use crate::model::AccessEntry;
use crate::personalisation::{RecommendationInput, RecommendationService};
use crate::privacy::AccessLog;
use crate::recommend::{Product, Reason, Scored};
use crate::store::ProductUpload;

/// `sightline.v1.RecommendationService` over the use cases.
pub struct RecommendationApi {
    service: Arc<RecommendationService>,
    access_log: Option<AccessLog>,
    clock: Arc<dyn crate::model::Clock>,
}

impl RecommendationApi {
    pub fn new(service: Arc<RecommendationService>, clock: Arc<dyn crate::model::Clock>) -> Self {
        RecommendationApi {
            service,
            access_log: None,
            clock,
        }
    }

    /// Recommendations read a person's history: each is logged as a read.
    pub fn with_access_log(mut self, access_log: AccessLog) -> Self {
        self.access_log = Some(access_log);
        self
    }
}

fn proto_product(product: &Product) -> pb::Product {
    pb::Product {
        product_id: product.product_id.clone(),
        name: product.name.clone(),
        category: product.category.clone(),
        price: product.price,
        available: Some(product.available),
    }
}

fn proto_recommendation(scored: &Scored, because_of: String) -> pb::Recommendation {
    let reason = match scored.reason {
        Reason::Together { .. } => pb::RecommendationReason::Together,
        Reason::Interest { .. } => pb::RecommendationReason::Interest,
        Reason::Popular { .. } => pb::RecommendationReason::Popular,
    };
    pb::Recommendation {
        product: Some(proto_product(&scored.product)),
        score: scored.score,
        reason: reason.into(),
        explanation: scored.explanation.clone(),
        because_of_product_id: because_of,
    }
}

#[tonic::async_trait]
impl RecommendationRpc for RecommendationApi {
    async fn get_recommendations(
        &self,
        request: Request<pb::GetRecommendationsRequest>,
    ) -> Result<Response<pb::GetRecommendationsResponse>, Status> {
        let caller = caller_name(&request);
        let request = request.into_inner();
        let input = RecommendationInput {
            lookup: profile_lookup(request.lookup).map_err(to_status)?,
            limit: usize::try_from(request.limit).unwrap_or(usize::MAX),
            category: request.category,
            context_product_id: request.context_product_id,
            include_purchased: request.include_purchased,
            holdout_segment_id: request.holdout_segment_id,
        };
        let answer = self.service.recommend(input).await.map_err(to_status)?;
        if let Some(access_log) = &self.access_log {
            access_log
                .record(AccessEntry {
                    profile: answer.profile_id,
                    at: self.clock.now(),
                    caller,
                    method: "GetRecommendations".to_owned(),
                })
                .await;
        }
        let recommendations = answer
            .items
            .iter()
            .map(|scored| {
                let because_of = match scored.reason {
                    Reason::Together { anchor, .. } => self.service.product_id(anchor),
                    _ => String::new(),
                };
                proto_recommendation(scored, because_of)
            })
            .collect();
        Ok(Response::new(pb::GetRecommendationsResponse {
            profile_id: answer.profile_id.to_string(),
            recommendations,
            personalised: answer.personalised,
            not_personalised_reason: answer.not_personalised_reason,
        }))
    }

    async fn get_related_products(
        &self,
        request: Request<pb::GetRelatedProductsRequest>,
    ) -> Result<Response<pb::GetRelatedProductsResponse>, Status> {
        let request = request.into_inner();
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let related = self
            .service
            .related(&request.product_id, limit)
            .map_err(to_status)?;
        let product_id = request.product_id.trim().to_owned();
        let products = related
            .iter()
            .map(|scored| {
                let because_of = match scored.reason {
                    Reason::Together { .. } => product_id.clone(),
                    _ => String::new(),
                };
                proto_recommendation(scored, because_of)
            })
            .collect();
        Ok(Response::new(pb::GetRelatedProductsResponse { products }))
    }

    async fn put_products(
        &self,
        request: Request<pb::PutProductsRequest>,
    ) -> Result<Response<pb::PutProductsResponse>, Status> {
        let uploads = request
            .into_inner()
            .products
            .into_iter()
            .map(|product| ProductUpload {
                available: product.available,
                product: Product {
                    product_id: product.product_id,
                    name: product.name,
                    category: product.category,
                    price: product.price,
                    available: product.available.unwrap_or(true),
                },
            })
            .collect();
        let (created, updated) = self
            .service
            .put_products(uploads)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PutProductsResponse { created, updated }))
    }
}
