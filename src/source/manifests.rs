//! `--manifests DIR`: Services, EndpointSlices, Endpoints and Nodes from
//! YAML/JSON files, reloaded on change.
