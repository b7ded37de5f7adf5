use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::to_timestamp;
use super::pb::{self, admin_service_server::AdminService as AdminRpc};
use super::to_status;
use crate::identity::fuzzy::MatchModel;
use crate::model::UnixMillis;
use crate::service::ProfileService;

/// `sightline.v1.AdminService` over the domain service.
pub struct AdminApi {
    service: Arc<ProfileService>,
}

impl AdminApi {
    pub fn new(service: Arc<ProfileService>) -> Self {
        AdminApi { service }
    }
}

#[tonic::async_trait]
impl AdminRpc for AdminApi {
    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let directory = request.into_inner().directory;
        let report = self.service.backup(&directory).await.map_err(to_status)?;
        Ok(Response::new(pb::BackupResponse {
            path: report.path.display().to_string(),
            keys: report.keys,
            bytes: report.bytes,
            writer_blocked_ms: report.writer_blocked_ms,
        }))
    }

    async fn get_match_model(
        &self,
        _request: Request<pb::GetMatchModelRequest>,
    ) -> Result<Response<pb::MatchModel>, Status> {
        Ok(Response::new(proto_model(&self.service.match_model())))
    }

    async fn estimate_match_model(
        &self,
        _request: Request<pb::EstimateMatchModelRequest>,
    ) -> Result<Response<pb::MatchModel>, Status> {
        let model = self
            .service
            .estimate_match_model()
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto_model(&model)))
    }
}

fn proto_model(model: &MatchModel) -> pb::MatchModel {
    pb::MatchModel {
        version: model.version,
        estimated_at: (model.estimated_at_ms != 0)
            .then(|| to_timestamp(UnixMillis(model.estimated_at_ms))),
        population: model.population,
        duplicate_rate: model.duplicate_rate,
        random_pairs: model.random_pairs,
        blocked_pairs: model.blocked_pairs,
        fields: model
            .fields
            .iter()
            .map(|field| pb::MatchModelField {
                field: field.field.clone(),
                levels: field
                    .levels
                    .iter()
                    .map(|level| pb::MatchModelLevel {
                        name: level.name.clone(),
                        m: level.m,
                        u: level.u,
                        bits: level.bits(),
                    })
                    .collect(),
            })
            .collect(),
    }
}
