//! HTTP servers: /healthz and /livez on the healthz address, /metrics (and
//! /proxyMode, /healthz) on the metrics address, as kube-proxy serves them;
//! and each Service's health-check node port (`healthcheck`).

pub mod healthcheck;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use telemetry::{HealthReport, Telemetry, go_time};

use crate::config::Config;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which of the two servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Healthz,
    Metrics,
}

/// The servers once bound: their actual addresses (useful with port 0),
/// the task serving them, and the ones that could not be bound.
pub struct Running {
    pub healthz: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub task: JoinHandle<anyhow::Result<()>>,
    pub failed: Vec<(Server, anyhow::Error)>,
}

/// Bind the configured addresses (None disables a server) and serve in the
/// background. A server that cannot be bound is reported in `failed` and
/// the other one still serves: the caller decides, as kube-proxy does with
/// bindAddressHardFail, whether that stops the proxy.
pub async fn start(cfg: &Config, telemetry: Arc<Telemetry>) -> anyhow::Result<Running> {
    let mut servers = Vec::new();
    let mut failed = Vec::new();
    let mut bound = (None, None);
    let same = cfg.healthz_bind_address.is_some()
        && cfg.healthz_bind_address == cfg.metrics_bind_address
        && cfg.healthz_bind_address.is_some_and(|a| a.port() != 0);
    if let Some(addr) = cfg.healthz_bind_address {
        match bind(addr, "healthz").await {
            Ok(l) => {
                bound.0 = Some(l.local_addr()?);
                let mut router = health_router(telemetry.clone());
                if same {
                    // One address for both: one listener serves both sets of paths.
                    router = router.merge(metrics_routes(telemetry.clone(), false));
                    bound.1 = bound.0;
                }
                servers.push((l, router));
            }
            Err(e) => failed.push((Server::Healthz, e)),
        }
    }
    if let (Some(addr), false) = (cfg.metrics_bind_address, same) {
        match bind(addr, "metrics").await {
            Ok(l) => {
                bound.1 = Some(l.local_addr()?);
                servers.push((l, metrics_router(telemetry.clone())));
            }
            Err(e) => failed.push((Server::Metrics, e)),
        }
    }
    let task = tokio::spawn(async move {
        if servers.is_empty() {
            // Both disabled: nothing to serve, nothing to fail.
            std::future::pending::<()>().await;
        }
        let all = servers
            .into_iter()
            .map(|(l, r)| Box::pin(async move { axum::serve(l, r).await }));
        match futures::future::select_all(all.collect::<Vec<_>>()).await {
            (Err(e), _, _) => Err(anyhow::Error::new(e).context("HTTP server failed")),
            (Ok(()), _, _) => Ok(()),
        }
    });
    Ok(Running {
        healthz: bound.0,
        metrics: bound.1,
        task,
        failed,
    })
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} server to {addr}"))
}

/// /healthz (proxier and node health) and /livez (proxier only).
pub fn health_router(t: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(t)
}

/// /metrics, /proxyMode and a plain /healthz, like kube-proxy's metrics port.
pub fn metrics_router(t: Arc<Telemetry>) -> Router {
    metrics_routes(t, true)
}

fn metrics_routes(t: Arc<Telemetry>, plain_healthz: bool) -> Router {
    let r = Router::new()
        .route("/metrics", get(metrics))
        .route("/proxyMode", get(proxy_mode));
    // Sharing the healthz address, the real /healthz is already there.
    let r = if plain_healthz {
        r.route("/healthz", get(|| async { "ok" }))
    } else {
        r
    };
    r.with_state(t)
}

async fn healthz(State(t): State<Arc<Telemetry>>) -> Response {
    let h = t.health();
    health_response(&t, false, h.healthy && h.node_eligible, &h)
}

async fn livez(State(t): State<Arc<Telemetry>>) -> Response {
    let h = t.health();
    health_response(&t, true, h.healthy, &h)
}

fn health_response(t: &Telemetry, livez: bool, healthy: bool, h: &HealthReport) -> Response {
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    t.count_probe(livez, status.as_u16());
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        health_body(livez, h),
    )
        .into_response()
}

/// Upstream's body (v1.36 `ProxyHealth`), field for field and in its order:
/// `nodeEligible` only on /healthz, `healthy` the proxier's own health (the
/// node's eligibility is not folded in), `status` one entry per IP family
/// once a sync has completed. An API outage is not in it: it is the
/// `kproxy_source_connected` metric and a log line.
fn health_body(livez: bool, h: &HealthReport) -> String {
    #[derive(serde::Serialize)]
    struct Family {
        #[serde(rename = "lastUpdated")]
        last_updated: String,
        healthy: bool,
    }
    #[derive(serde::Serialize)]
    struct Body {
        #[serde(rename = "lastUpdated")]
        last_updated: String,
        #[serde(rename = "currentTime")]
        current_time: String,
        #[serde(rename = "nodeEligible", skip_serializing_if = "Option::is_none")]
        node_eligible: Option<bool>,
        healthy: bool,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        status: std::collections::BTreeMap<&'static str, Family>,
    }
    let status = match h.last_synced {
        Some(t) => h
            .families
            .iter()
            .map(|f| {
                let fam = Family {
                    last_updated: go_time(t),
                    healthy: h.healthy,
                };
                (*f, fam)
            })
            .collect(),
        None => Default::default(),
    };
    let body = Body {
        last_updated: go_time(h.last_updated),
        current_time: go_time(h.current_time),
        node_eligible: (!livez).then_some(h.node_eligible),
        healthy: h.healthy,
        status,
    };
    serde_json::to_string(&body).unwrap_or_default()
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], t.encode_metrics()).into_response()
}

async fn proxy_mode(State(t): State<Arc<Telemetry>>) -> Response {
    match t.proxy_mode() {
        Some(m) => m.to_string().into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "mode not decided yet").into_response(),
    }
}
