//! `--manifests DIR`: Services, EndpointSlices, Endpoints and Nodes from
//! YAML/JSON files, reloaded on change.

use std::path::PathBuf;

use super::EventSender;

pub async fn run(_dir: PathBuf, _tx: EventSender) -> anyhow::Result<()> {
    anyhow::bail!("manifests source not implemented")
}
