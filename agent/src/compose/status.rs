//! What runs now: one row per container of the project, for `status` and
//! for recording a release (which image actually runs).

use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::Docker;
use serde::Serialize;

use super::plan::{docker_error, list_project};
use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceState {
    pub service: String,
    pub container_name: String,
    pub container_id: String,
    /// The image reference the container was created from (`Config.Image`).
    pub image: String,
    /// The image ID it runs.
    pub image_id: String,
    /// `running`, `exited`, `restarting`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`; `None` without a healthcheck.
    pub health: Option<String>,
    /// RFC 3339, as the Engine reports it.
    pub started_at: Option<String>,
}

/// Every (non one-off) container of `project_name`, sorted by service.
pub async fn service_states(
    docker: &Docker,
    project_name: &str,
) -> Result<Vec<ServiceState>, Error> {
    let listed = list_project(docker, project_name).await?;
    let mut out = Vec::new();
    for c in listed {
        let info = match docker.inspect_container(&c.id, None).await {
            Ok(info) => info,
            // Removed between the list and the inspect.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => continue,
            Err(e) => return Err(docker_error(&format!("inspect container {}", c.name), e)),
        };
        let state = info.state.unwrap_or_default();
        out.push(ServiceState {
            service: c.service,
            container_name: c.name,
            container_id: c.id,
            image: info.config.and_then(|c| c.image).unwrap_or_default(),
            image_id: info.image.unwrap_or_default(),
            state: state
                .status
                .unwrap_or(ContainerStateStatusEnum::EMPTY)
                .to_string(),
            health: state.health.and_then(|h| h.status).and_then(|s| match s {
                HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => None,
                other => Some(other.to_string()),
            }),
            started_at: state.started_at,
        });
    }
    out.sort_by(|a, b| {
        a.service
            .cmp(&b.service)
            .then(a.container_name.cmp(&b.container_name))
    });
    Ok(out)
}
