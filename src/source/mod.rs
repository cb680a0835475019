//! Sources of cluster objects: the API server (`kube`) or a directory of
//! manifests (`manifests`). Both send the same `SourceEvent`s into the sync
//! loop's channel.

pub(crate) mod access;
pub mod kube;
pub mod manifests;
pub(crate) mod ratelimit;

use tokio::sync::mpsc::UnboundedSender;

pub use crate::cluster::SourceEvent;

/// Where a source sends its events.
pub type EventSender = UnboundedSender<SourceEvent>;
