//! Metrics in the Prometheus text format at `GET /metrics` (`stats:read`:
//! give the scraper an API key with that scope).

use std::sync::OnceLock;

use actix_web::{HttpResponse, get, web};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{
    auth::{CurrentAdmin, Permission},
    error::ApiError,
};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls do nothing).
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
            ])
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                match metrics::set_global_recorder(recorder) {
                    Ok(()) => Some(handle),
                    Err(e) => {
                        tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the metrics recorder");
                None
            }
        }
    });
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(scrape);
}

/// The service's metrics in the Prometheus text format.
#[utoipa::path(tag = "health", responses((status = 200, content_type = "text/plain"), (status = 401), (status = 403)), security(("bearer" = []), ("api_key" = [])))]
#[get("/metrics")]
#[tracing::instrument(skip_all)]
pub async fn scrape(caller: CurrentAdmin) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::StatsRead)?;
    let body = HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}
