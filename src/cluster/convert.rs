//! Conversion from k8s-openapi objects to the model, and validation.
//!
//! An object-level error (a Service whose clusterIP does not parse, a port
//! of 0 or 70000, a nodePort outside the range, a missing required field)
//! refuses the whole object: `Err(Problem)`. A part-level error (one endpoint
//! with a bad address, a duplicate endpoint) drops that part and is returned
//! next to the accepted object.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use super::model::{EndpointSlice, Node, Service};
use super::state::{Kind, ObjectRef, Problem};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Inclusive NodePort range (the API server's --service-node-port-range).
    pub nodeport_range: (u16, u16),
    /// This node's name; Node objects of other nodes are ignored.
    pub node_name: String,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            nodeport_range: (30000, 32767),
            node_name: String::new(),
        }
    }
}

pub type Converted<T> = Result<(T, Vec<Problem>), Problem>;

fn unimplemented_ref(kind: Kind) -> Problem {
    Problem {
        object: ObjectRef::new(kind, "", ""),
        reason: "conversion not implemented".into(),
    }
}

pub fn service(_s: &core::Service, _o: &ConvertOptions) -> Converted<Service> {
    Err(unimplemented_ref(Kind::Service))
}

pub fn endpoint_slice(
    _s: &discovery::EndpointSlice,
    _o: &ConvertOptions,
) -> Converted<EndpointSlice> {
    Err(unimplemented_ref(Kind::EndpointSlice))
}

/// A legacy v1 Endpoints object, mirrored into one slice per address family
/// as the EndpointSlice mirroring controller would.
pub fn endpoints(_e: &core::Endpoints, _o: &ConvertOptions) -> Converted<Vec<EndpointSlice>> {
    Err(unimplemented_ref(Kind::Endpoints))
}

pub fn node(_n: &core::Node) -> Result<Node, Problem> {
    Err(unimplemented_ref(Kind::Node))
}
