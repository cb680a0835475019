//! Cluster state: the typed, validated model of Services, EndpointSlices and
//! this Node, built from API objects. Bad input is rejected here, per object,
//! with a reason; everything else keeps working.
//!
//! - `object`: API objects as sources deliver them, and their names.
//! - `convert`: API object → model, refusing bad input with a `Problem`.
//! - `model`: the validated types the planners read.
//! - `state`: the store the sync loop owns.
//! - `topology`: which endpoints serve traffic from this node.
//! - `view`: the cluster as planners read it (the store, or fixed objects).

pub(crate) mod convert;
mod model;
mod object;
mod state;
pub(crate) mod topology;
mod view;

pub use crate::net::{IpFamily, Protocol};
pub use model::*;
pub use object::{Kind, Object, ObjectRef, Problem, SourceEvent};
pub use state::ClusterState;
pub use topology::{NoLocalEndpoints, PolicyScope};
pub use view::{ClusterView, StaticCluster};
