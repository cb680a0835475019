//! API objects as sources deliver them, how they are named, what a source
//! tells the store about them, and what is wrong with one when it is refused.

use std::fmt;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The kinds of API object kproxy reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Endpoints,
    Node,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Node => "Node",
        })
    }
}

/// A raw API object as a source delivers it.
#[derive(Clone, Debug)]
pub enum Object {
    Service(Box<core::Service>),
    EndpointSlice(Box<discovery::EndpointSlice>),
    Endpoints(Box<core::Endpoints>),
    Node(Box<core::Node>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::Node(_) => Kind::Node,
        }
    }

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
        }
    }

    pub fn object_ref(&self) -> ObjectRef {
        let m = self.metadata();
        ObjectRef {
            kind: self.kind(),
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        }
    }
}

/// `Kind namespace/name`, used to name an object in errors and in the store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Something wrong with one object (or one part of it), and what was done about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    pub object: ObjectRef,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// What a source tells the store.
#[derive(Clone, Debug)]
pub enum SourceEvent {
    /// Created or changed.
    Apply(Object),
    /// Gone.
    Delete(ObjectRef),
    /// The complete current set of one kind (a relist, a manifests reload):
    /// objects of that kind not in it are gone.
    Replace(Kind, Vec<Object>),
    /// The source has delivered its initial state; `--once` may sync now.
    Synced,
    /// The source lost (false) or regained (true) its connection.
    Connected(bool),
}

impl SourceEvent {
    /// The kind of object the event is about; None for the source's own news.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            SourceEvent::Apply(o) => Some(o.kind()),
            SourceEvent::Delete(r) => Some(r.kind),
            SourceEvent::Replace(k, _) => Some(*k),
            SourceEvent::Synced | SourceEvent::Connected(_) => None,
        }
    }
}
