//! The store the sync loop owns: applies source events, keeps the last good
//! version of every object, and remembers which Services changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::convert::{self, ConvertOptions};
use super::model::{EndpointSlice, Node, Service, ServiceName};
use super::object::{Kind, Object, ObjectRef, Problem, SourceEvent};

/// Services, their slices and this node, as last accepted.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub options: ConvertOptions,
    services: BTreeMap<ServiceName, Arc<Service>>,
    /// Keyed by the API object they came from: an EndpointSlice gives one,
    /// a legacy Endpoints object one per subset and family (mirrored).
    slices: BTreeMap<ObjectRef, Arc<Vec<EndpointSlice>>>,
    by_service: BTreeMap<ServiceName, BTreeSet<ObjectRef>>,
    node: Option<Node>,
    /// Objects currently refused, and why.
    rejected: BTreeMap<ObjectRef, Problem>,
    /// Services whose Service or slices changed since `take_changes`.
    changed: BTreeSet<ServiceName>,
    /// The node changed since `take_changes` (every Service may be affected).
    node_changed: bool,
    /// Counters for metrics: (service changes, endpoint changes).
    pub service_changes: u64,
    pub endpoint_changes: u64,
}

impl ClusterState {
    pub fn new(options: ConvertOptions) -> Self {
        Self {
            options,
            ..Default::default()
        }
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    pub fn service(&self, name: &ServiceName) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// The slices that feed `name`'s endpoints. Mirrored legacy Endpoints
    /// count only for a Service without a selector, as the mirroring
    /// controller would create them.
    pub(crate) fn slices_for(&self, name: &ServiceName) -> Vec<&EndpointSlice> {
        let with_selector = self.services.get(name).is_some_and(|s| s.has_selector);
        self.by_service
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .flat_map(|v| v.iter())
            .filter(|s| !(s.mirrored && with_selector))
            .collect()
    }

    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Objects currently refused, each with its reason.
    pub(crate) fn rejected(&self) -> impl Iterator<Item = &Problem> {
        self.rejected.values()
    }

    /// Services changed since the last call, or None when everything must be
    /// considered changed (the node changed).
    pub(crate) fn take_changes(&mut self) -> Option<BTreeSet<ServiceName>> {
        let changed = std::mem::take(&mut self.changed);
        if std::mem::take(&mut self.node_changed) {
            None
        } else {
            Some(changed)
        }
    }

    /// Apply one event. Returns the problems it raised (already logged by the caller).
    pub fn apply(&mut self, event: SourceEvent) -> Vec<Problem> {
        match event {
            SourceEvent::Apply(obj) => self.upsert(obj),
            SourceEvent::Delete(r) => {
                self.remove(&r);
                Vec::new()
            }
            SourceEvent::Replace(kind, objs) => self.replace(kind, objs),
            SourceEvent::Synced | SourceEvent::Connected(_) => Vec::new(),
        }
    }

    fn replace(&mut self, kind: Kind, objs: Vec<Object>) -> Vec<Problem> {
        let keep: BTreeSet<ObjectRef> = objs.iter().map(|o| o.object_ref()).collect();
        let existing: Vec<ObjectRef> = self.refs_of(kind);
        for r in existing {
            if !keep.contains(&r) {
                self.remove(&r);
            }
        }
        self.rejected
            .retain(|r, _| r.kind != kind || keep.contains(r));
        objs.into_iter().flat_map(|o| self.upsert(o)).collect()
    }

    fn refs_of(&self, kind: Kind) -> Vec<ObjectRef> {
        match kind {
            Kind::Service => self
                .services
                .keys()
                .map(|n| ObjectRef::new(Kind::Service, &n.namespace, &n.name))
                .collect(),
            Kind::EndpointSlice | Kind::Endpoints => self
                .slices
                .keys()
                .filter(|r| r.kind == kind)
                .cloned()
                .collect(),
            Kind::Node => self
                .node
                .iter()
                .map(|n| ObjectRef::new(Kind::Node, "", &n.name))
                .collect(),
        }
    }

    fn upsert(&mut self, obj: Object) -> Vec<Problem> {
        let r = obj.object_ref();
        let result = match &obj {
            Object::Service(s) => convert::service(s, &self.options).map(|(svc, problems)| {
                self.put_service(svc);
                problems
            }),
            Object::EndpointSlice(s) => {
                convert::endpoint_slice(s, &self.options).map(|(slice, problems)| {
                    let svc = slice.service_name();
                    self.put_slices(r.clone(), svc, vec![slice]);
                    problems
                })
            }
            Object::Endpoints(e) => {
                convert::endpoints(e, &self.options).map(|(slices, problems)| {
                    // Endpoints are named after their Service.
                    let svc = ServiceName::new(&r.namespace, &r.name);
                    self.put_slices(r.clone(), svc, slices);
                    problems
                })
            }
            Object::Node(_) if !self.is_this_node(&r.name) => Ok(Vec::new()),
            Object::Node(n) => convert::node(n).map(|node| {
                if self.node.as_ref() != Some(&node) {
                    self.node = Some(node);
                    self.node_changed = true;
                }
                Vec::new()
            }),
        };
        match result {
            Ok(problems) => {
                self.rejected.remove(&r);
                problems
            }
            // The object is refused; its last good version (if any) stays, so
            // nothing already programmed is lost because of a bad update.
            Err(problem) => {
                self.rejected.insert(r, problem.clone());
                vec![problem]
            }
        }
    }

    fn put_service(&mut self, svc: Service) {
        if self.services.get(&svc.name).map(|s| s.as_ref()) == Some(&svc) {
            return;
        }
        self.service_changes += 1;
        self.changed.insert(svc.name.clone());
        self.services.insert(svc.name.clone(), Arc::new(svc));
    }

    fn is_this_node(&self, name: &str) -> bool {
        self.options.node_name.is_empty() || self.options.node_name == name
    }

    fn put_slices(&mut self, r: ObjectRef, svc: ServiceName, slices: Vec<EndpointSlice>) {
        if let Some(old) = self.slices.get(&r) {
            if old.as_slice() == slices.as_slice() {
                return;
            }
            // The slice may have moved to another Service (label edited).
            if let Some(old_svc) = old.first().map(|s| s.service_name()) {
                self.unindex(&old_svc, &r);
                self.changed.insert(old_svc);
            }
        }
        self.endpoint_changes += 1;
        self.changed.insert(svc.clone());
        self.by_service.entry(svc).or_default().insert(r.clone());
        self.slices.insert(r, Arc::new(slices));
    }

    fn unindex(&mut self, svc: &ServiceName, r: &ObjectRef) {
        if let Some(set) = self.by_service.get_mut(svc) {
            set.remove(r);
            if set.is_empty() {
                self.by_service.remove(svc);
            }
        }
    }

    fn remove(&mut self, r: &ObjectRef) {
        self.rejected.remove(r);
        match r.kind {
            Kind::Service => {
                let name = ServiceName::new(&r.namespace, &r.name);
                if self.services.remove(&name).is_some() {
                    self.service_changes += 1;
                    self.changed.insert(name);
                }
            }
            Kind::EndpointSlice | Kind::Endpoints => {
                if let Some(old) = self.slices.remove(r) {
                    self.endpoint_changes += 1;
                    let svc = match old.first() {
                        Some(s) => s.service_name(),
                        None if r.kind == Kind::Endpoints => {
                            ServiceName::new(&r.namespace, &r.name)
                        }
                        None => return,
                    };
                    // An empty mirrored set was still indexed under its Service.
                    self.unindex(&svc, r);
                    self.changed.insert(svc);
                }
            }
            Kind::Node => {
                if self.node.as_ref().is_some_and(|n| n.name == r.name) {
                    self.node = None;
                    self.node_changed = true;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
