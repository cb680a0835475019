//! The cluster as planners read it: the store, or model objects held as they
//! are (tests, benchmarks).

use std::collections::BTreeMap;

use super::model::{EndpointSlice, Node, Service, ServiceName};
use super::state::ClusterState;

/// What a planner reads: the store the sync loop owns, or a fixed set of
/// model objects (tests, benchmarks).
pub trait ClusterView {
    /// Services in name order.
    fn services(&self) -> Vec<&Service>;
    fn slices_for(&self, name: &ServiceName) -> Vec<&EndpointSlice>;
    fn node(&self) -> Option<&Node>;
}

impl ClusterView for ClusterState {
    fn services(&self) -> Vec<&Service> {
        ClusterState::services(self).map(|s| s.as_ref()).collect()
    }

    fn slices_for(&self, name: &ServiceName) -> Vec<&EndpointSlice> {
        ClusterState::slices_for(self, name)
    }

    fn node(&self) -> Option<&Node> {
        ClusterState::node(self)
    }
}

/// Model objects held as they are, without conversion from API objects.
#[derive(Clone, Debug, Default)]
pub struct StaticCluster {
    pub services: BTreeMap<ServiceName, Service>,
    /// Slices by the Service they belong to.
    pub slices: BTreeMap<ServiceName, Vec<EndpointSlice>>,
    pub node: Option<Node>,
}

impl StaticCluster {
    pub fn add_service(&mut self, svc: Service) -> &mut Self {
        self.services.insert(svc.name.clone(), svc);
        self
    }

    /// Replace the Service's slice of the same name, or add it.
    pub fn put_slice(&mut self, slice: EndpointSlice) -> &mut Self {
        let v = self.slices.entry(slice.service_name()).or_default();
        v.retain(|s| s.name != slice.name);
        v.push(slice);
        self
    }
}

impl ClusterView for StaticCluster {
    fn services(&self) -> Vec<&Service> {
        self.services.values().collect()
    }

    fn slices_for(&self, name: &ServiceName) -> Vec<&EndpointSlice> {
        self.slices.get(name).into_iter().flatten().collect()
    }

    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}
