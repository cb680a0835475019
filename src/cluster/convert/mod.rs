//! Conversion from k8s-openapi objects to the model, and validation.
//!
//! An object-level error (a Service whose clusterIP does not parse, a port
//! of 0 or 70000, a duplicate nodePort, a missing required field)
//! refuses the whole object: `Err(Problem)`. A part-level error (one endpoint
//! with a bad address, a duplicate endpoint) drops that part and is returned
//! next to the accepted object.
//!
//! The rules are Kubernetes' own (API validation and defaulting, plus what
//! kube-proxy itself filters), because kproxy may read objects that never went
//! through an API server: the manifests source hands over whatever an operator
//! wrote. Every reason names the field (`spec.ports[1].port`) so that it can
//! be found in the manifest.

//!
//! - `report`: the findings gathered for one object, and shared field checks.
//! - `service`, `slice` (EndpointSlices and legacy Endpoints), `node`: one
//!   file per kind.

mod node;
mod report;
mod service;
mod slice;

pub use node::node;
pub use service::service;
pub use slice::{endpoint_slice, endpoints};

use super::object::Problem;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// On a v1 Endpoints object: do not mirror it into slices.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// When the change that produced these endpoints happened (for latency metrics).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The older spelling of `spec.loadBalancerSourceRanges`, still honoured upstream.
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
/// The node's zone, for topology-aware routing.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Upper bound of `sessionAffinityConfig.clientIP.timeoutSeconds` (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// What conversion needs to know about the cluster and this node.
///
/// Not the NodePort range: the API server owns it (its
/// --service-node-port-range) and has already checked every nodePort, so a
/// proxy flag that differs must not refuse a Service the cluster accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// This node's name; Node objects of other nodes are ignored.
    pub node_name: String,
}

/// An accepted object with the parts dropped from it, or why it was refused.
pub type Converted<T> = Result<(T, Vec<Problem>), Problem>;

#[cfg(test)]
mod tests;
