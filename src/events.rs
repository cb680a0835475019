//! Kubernetes Events, where upstream kube-proxy records them: a Normal
//! `Starting` event on this node when the proxy starts, and Warning events
//! on Services whose node-local servers cannot start. Recording is best
//! effort: an event that cannot be written is logged and dropped, it never
//! holds up a sync.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Where events go: the API server, or nowhere (the manifests source).
#[derive(Clone)]
pub struct Events {
    recorder: Option<Recorder>,
    node: String,
}

/// The action upstream attaches to its start-up events.
pub const START_ACTION: &str = "StartKubeProxy";

/// Upstream's reason and action for a health-check node port that could
/// not be served (pkg/proxy/healthcheck/service_health.go).
pub const HEALTHCHECK_FAILED: &str = "FailedToStartServiceHealthcheck";
pub const HEALTHCHECK_ACTION: &str = "Listen";

impl Events {
    /// Events recorded through `client`, reported as `kproxy` on `node`.
    pub fn to_api(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "kproxy".into(),
            instance: Some(format!("kproxy-{node}")),
        };
        Self {
            recorder: Some(Recorder::new(client, reporter)),
            node: node.to_string(),
        }
    }

    /// No API server: events are only logged.
    pub fn none(node: &str) -> Self {
        Self {
            recorder: None,
            node: node.to_string(),
        }
    }

    /// The reference upstream uses for its node events (a Node has no
    /// namespace; the event lands in `default`).
    pub fn node_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.node.clone()),
            ..Default::default()
        }
    }

    /// This node's name, as events name it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A Service, by namespace and name.
    pub fn service_ref(namespace: &str, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    /// Upstream's birth cry: Normal, reason `Starting`, action `StartKubeProxy`.
    pub fn starting(&self) {
        self.record(
            self.node_ref(),
            EventType::Normal,
            "Starting",
            START_ACTION,
            None,
        );
    }

    /// Upstream's Warning on a Service whose health-check node port could
    /// not be listened on; `note` is upstream's message.
    pub fn healthcheck_failed(&self, service: &crate::cluster::ServiceName, note: String) {
        self.record(
            Self::service_ref(&service.namespace, &service.name),
            EventType::Warning,
            HEALTHCHECK_FAILED,
            HEALTHCHECK_ACTION,
            Some(note),
        );
    }

    /// Record an event in the background (the caller may be a blocking sync).
    pub fn record(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: Option<String>,
    ) {
        let Some(recorder) = self.recorder.clone() else {
            tracing::debug!(reason, action, "event (no API server to record it)");
            return;
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note,
            action: action.into(),
            secondary: None,
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if let Err(e) = recorder.publish(&event, &regarding).await {
                tracing::warn!(reason = %event.reason, "could not record an event: {e}");
            }
        });
    }
}
