//! The findings gathered while converting one object, and the field checks
//! every kind shares.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Converted;
use crate::cluster::model::TrafficPolicy;
use crate::cluster::object::{Kind, ObjectRef, Problem};
use crate::net::Protocol;

/// What is wrong with one object, gathered while converting it, so that an
/// operator sees every mistake of a refused object at once rather than one
/// per edit.
pub(super) struct Report {
    pub(super) object: ObjectRef,
    /// Object-level: any of these refuses the object.
    pub(super) errors: Vec<String>,
    /// Part-level: the part was dropped, the object kept.
    dropped: Vec<Problem>,
}

impl Report {
    pub(super) fn new(kind: Kind, meta: &ObjectMeta) -> Self {
        Self {
            object: ObjectRef::new(
                kind,
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            ),
            errors: Vec::new(),
            dropped: Vec::new(),
        }
    }

    pub(super) fn error(&mut self, reason: impl Into<String>) {
        self.errors.push(reason.into());
    }

    pub(super) fn drop_part(&mut self, reason: impl Into<String>) {
        self.dropped.push(Problem {
            object: self.object.clone(),
            reason: reason.into(),
        });
    }

    /// name (and namespace, for namespaced kinds) are what the store keys on.
    pub(super) fn require_meta(&mut self, meta: &ObjectMeta, namespaced: bool) {
        if meta.name.as_deref().unwrap_or("").is_empty() {
            self.error("metadata.name: required");
        }
        if namespaced && meta.namespace.as_deref().unwrap_or("").is_empty() {
            self.error("metadata.namespace: required");
        }
    }

    pub(super) fn into_problem(self) -> Problem {
        Problem {
            object: self.object,
            reason: self.errors.join("; "),
        }
    }

    pub(super) fn finish<T>(self, value: T) -> Converted<T> {
        if self.errors.is_empty() {
            Ok((value, self.dropped))
        } else {
            Err(self.into_problem())
        }
    }

    /// A port number in 1..=65535, or an error naming `field`.
    pub(super) fn port(&mut self, field: &str, value: i32) -> Option<u16> {
        match u16::try_from(value) {
            Ok(p) if p != 0 => Some(p),
            _ => {
                self.error(format!("{field}: {value} is not a valid port (1-65535)"));
                None
            }
        }
    }

    /// Protocol, defaulting to TCP as the API server does.
    pub(super) fn protocol(&mut self, field: &str, value: Option<&str>) -> Protocol {
        match value {
            None | Some("") | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            Some(other) => {
                self.error(format!(
                    "{field}: unsupported protocol {other:?} (TCP, UDP or SCTP)"
                ));
                Protocol::Tcp
            }
        }
    }

    pub(super) fn traffic_policy(&mut self, field: &str, value: Option<&str>) -> TrafficPolicy {
        match value {
            None | Some("") | Some("Cluster") => TrafficPolicy::Cluster,
            Some("Local") => TrafficPolicy::Local,
            Some(other) => {
                self.error(format!(
                    "{field}: unsupported value {other:?} (Cluster or Local)"
                ));
                TrafficPolicy::Cluster
            }
        }
    }
}

/// An address as the API server accepts one.
pub(super) fn parse_ip(s: &str) -> Option<IpAddr> {
    // Rust's parser is as strict as the API server's validation: no leading
    // zeros, no surrounding spaces, no zone suffix.
    s.parse().ok()
}
