//! The ready service definitions of `GET /templates` and what creating from one takes.

use super::*;

/// A ready service definition (the templates of docs/product.md).
#[derive(Debug, Clone, Serialize)]
pub struct Template {
    /// What `POST /templates/{id}/create` names.
    pub id: &'static str,
    /// Its title.
    pub name: &'static str,
    /// One line on what it is for.
    pub description: &'static str,
    /// The service type a service made from it gets.
    pub service_type: ServiceType,
    /// Memory limit of its services.
    pub memory: &'static str,
    /// CPU limit of its services.
    pub cpu: &'static str,
    /// The container port, also in `PORT`.
    pub port: u16,
    /// The path its health check probes.
    pub health_path: &'static str,
    /// The service name the documented template carries (`template.name`).
    pub service_name: &'static str,
    /// Its environment variables and their defaults; a create request's own win.
    pub environment: &'static [(&'static str, &'static str)],
}

pub const TEMPLATES: &[Template] = &[
    Template {
        id: "rest_api_basic",
        name: "REST API",
        description: "An HTTP JSON API behind the gateway",
        service_type: ServiceType::RestApi,
        memory: "512m",
        cpu: "0.5",
        port: 8080,
        health_path: "/health",
        service_name: "rest-api-service",
        environment: &[("FLASK_ENV", "production"), ("FLASK_DEBUG", "false")],
    },
    Template {
        id: "websocket_service",
        name: "WebSocket service",
        description: "Long-lived WebSocket connections",
        service_type: ServiceType::Websocket,
        memory: "256m",
        cpu: "0.3",
        port: 8081,
        health_path: "/health",
        service_name: "websocket-service",
        environment: &[("WS_HOST", "0.0.0.0"), ("WS_PORT", "8081")],
    },
    Template {
        id: "background_worker",
        name: "Background worker",
        description: "Queue consumer or batch worker",
        service_type: ServiceType::BackgroundWorker,
        memory: "1g",
        cpu: "1.0",
        port: 8082,
        health_path: "/health",
        service_name: "background-worker",
        environment: &[("WORKER_POOL_SIZE", "4"), ("TASK_TIMEOUT", "300")],
    },
    Template {
        id: "scheduler_service",
        name: "Scheduler",
        description: "Runs jobs on a schedule",
        service_type: ServiceType::Scheduler,
        memory: "256m",
        cpu: "0.2",
        port: 8083,
        health_path: "/health",
        service_name: "scheduler-service",
        environment: &[("SCHEDULER_INTERVAL", "60"), ("MAX_JOBS", "10")],
    },
];

pub fn template(id: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.id == id)
}

/// Body of `POST /templates/{id}/create`: a name and a few overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateCreateRequest {
    pub name: Option<String>,
    pub image: Option<String>,
    pub plugin_id: Option<String>,
    pub port: Option<i64>,
    pub host_port: Option<i64>,
    pub host: Option<String>,
    pub replicas: Option<i64>,
    pub environment: Option<BTreeMap<String, String>>,
    pub volumes: Option<Vec<VolumeRequest>>,
    pub networks: Option<Vec<String>>,
    pub restart_policy: Option<RestartPolicy>,
    pub version: Option<String>,
    pub health_check: Option<HealthCheckRequest>,
}

impl Template {
    /// The create request this template stands for, with the caller's overrides.
    /// The template's limits apply; the config's default image fills a missing image.
    pub fn request(&self, o: TemplateCreateRequest, default_image: &str) -> CreateRequest {
        let mut hc = o.health_check.unwrap_or_default();
        if hc.path.is_none() && hc.url.is_none() {
            hc.path = Some(self.health_path.to_string());
        }
        let mut environment: BTreeMap<String, String> = self.environment.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        environment.extend(o.environment.unwrap_or_default());
        CreateRequest {
            name: o.name,
            plugin_id: o.plugin_id,
            service_type: Some(self.service_type),
            image: Some(o.image.unwrap_or_else(|| default_image.to_string())),
            port: Some(o.port.unwrap_or(self.port as i64)),
            host_port: o.host_port,
            host: o.host,
            environment: Some(environment),
            volumes: o.volumes,
            networks: o.networks,
            depends_on: None,
            health_check: Some(hc),
            resource_limits: Some(LimitsRequest {
                memory: Some(StringOrNumber::S(self.memory.to_string())),
                cpu: Some(StringOrNumber::S(self.cpu.to_string())),
                pids: None,
            }),
            restart_policy: o.restart_policy,
            version: o.version,
            replicas: o.replicas,
        }
    }
}
