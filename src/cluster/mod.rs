//! Cluster state: the typed, validated model of Services, EndpointSlices and
//! this Node, built from API objects. Bad input is rejected here, per object,
//! with a reason; everything else keeps working.

pub mod convert;
pub mod model;
pub mod state;
pub mod topology;

pub use model::*;
pub use state::{ClusterState, Kind, Object, ObjectRef, Problem, SourceEvent};
