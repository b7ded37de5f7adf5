use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, admin_service_server::AdminService as AdminRpc};
use super::to_status;
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
}
