//! HTTP servers: /healthz, /livez, /metrics, health-check node ports.
