//! The per-mode and per-subsystem sections of a KubeProxyConfiguration.
//!
//! Upstream has one sync period, taken from the section of the mode in
//! use (iptables for an empty mode); kproxy keeps each mode's own pair and
//! runs with the pair of the mode it ends up in. Each section's zero
//! values are defaulted as upstream defaults them: `ipvs.syncPeriod: 0s`
//! (what `kube-proxy --write-config-to` writes for a mode not in use) is
//! 30s, `iptables.minSyncPeriod: 0s` is 1s; `ipvs.minSyncPeriod: 0s` stays 0.

use std::time::Duration;

use serde_json::Value;

use super::{Walker, boolean, cidr, duration, duration_or, int32, integer, string, string_list};
use crate::config::file::FieldError;
use crate::config::{Config, LoggingExtras, NfTables, Unused};

const SYNC: Duration = Duration::from_secs(30);
const MIN_SYNC: Duration = Duration::from_secs(1);

impl Walker {
    pub(super) fn iptables(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (p, key, v) in Walker::fields(path, v)? {
            let c = &mut self.c;
            match key {
                "masqueradeAll" => c.masquerade_all = boolean(&p, v)?,
                "masqueradeBit" => c.masquerade_bit = integer(&p, v, 0, 31)? as u8,
                "localhostNodePorts" => c.iptables_localhost_nodeports = boolean(&p, v)?,
                "syncPeriod" => c.iptables_sync_period = duration_or(&p, v, SYNC)?,
                "minSyncPeriod" => c.iptables_min_sync_period = duration_or(&p, v, MIN_SYNC)?,
                _ => self.unknown(p),
            }
        }
        Ok(())
    }

    pub(super) fn ipvs(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (p, key, v) in Walker::fields(path, v)? {
            let c = &mut self.c;
            match key {
                "scheduler" => {
                    let s = string(&p, v)?.trim();
                    // Empty means the default (rr), as in kube-proxy.
                    if !s.is_empty() {
                        c.ipvs_scheduler = s.to_string();
                    }
                }
                "syncPeriod" => c.ipvs_sync_period = duration_or(&p, v, SYNC)?,
                "minSyncPeriod" => c.ipvs_min_sync_period = duration(&p, v)?,
                "strictARP" => c.ipvs_strict_arp = boolean(&p, v)?,
                "tcpTimeout" => c.ipvs_tcp_timeout = duration(&p, v)?,
                "tcpFinTimeout" => c.ipvs_tcpfin_timeout = duration(&p, v)?,
                "udpTimeout" => c.ipvs_udp_timeout = duration(&p, v)?,
                "excludeCIDRs" => {
                    c.ipvs_exclude_cidrs = string_list(&p, v)?
                        .into_iter()
                        .map(|(p, s)| cidr(&p, s))
                        .collect::<Result<_, _>>()?;
                }
                _ => self.unknown(p),
            }
        }
        Ok(())
    }

    pub(super) fn nftables(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (p, key, v) in Walker::fields(path, v)? {
            let n = &mut self.c.unused.nftables;
            match key {
                "masqueradeAll" => n.masquerade_all = boolean(&p, v)?,
                "masqueradeBit" => n.masquerade_bit = integer(&p, v, 0, 31)? as i32,
                "syncPeriod" => n.sync_period = duration_or(&p, v, SYNC)?,
                "minSyncPeriod" => n.min_sync_period = duration_or(&p, v, MIN_SYNC)?,
                _ => self.unknown(p),
            }
        }
        Ok(())
    }

    /// The pointer fields (maxPerCore, min, the TCP timeouts) keep their
    /// defaults only when absent or null: an explicit 0 means "leave the
    /// kernel's value".
    pub(super) fn conntrack(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (p, key, v) in Walker::fields(path, v)? {
            let ct = &mut self.c.conntrack;
            match key {
                "maxPerCore" => ct.max_per_core = int32(&p, v)?,
                "min" => ct.min = int32(&p, v)?,
                "tcpEstablishedTimeout" => ct.tcp_established_timeout = duration(&p, v)?,
                "tcpCloseWaitTimeout" => ct.tcp_close_wait_timeout = duration(&p, v)?,
                "tcpBeLiberal" => ct.tcp_be_liberal = boolean(&p, v)?,
                "udpTimeout" => ct.udp_timeout = duration(&p, v)?,
                "udpStreamTimeout" => ct.udp_stream_timeout = duration(&p, v)?,
                _ => self.unknown(p),
            }
        }
        Ok(())
    }

    pub(super) fn winkernel(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (p, key, v) in Walker::fields(path, v)? {
            let w = &mut self.c.unused.winkernel;
            match key {
                "networkName" => w.network_name = string(&p, v)?.to_string(),
                "sourceVip" => w.source_vip = string(&p, v)?.to_string(),
                "enableDSR" => w.enable_dsr = boolean(&p, v)?,
                "rootHnsEndpointName" => w.root_hns_endpoint_name = string(&p, v)?.to_string(),
                "forwardHealthCheckVip" => w.forward_health_check_vip = boolean(&p, v)?,
                _ => self.unknown(p),
            }
        }
        Ok(())
    }

    pub(super) fn detect_local(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (p, key, v) in Walker::fields(path, v)? {
            match key {
                "bridgeInterface" => self.c.pod_bridge_interface = string(&p, v)?.to_string(),
                "interfaceNamePrefix" => {
                    self.c.pod_interface_name_prefix = string(&p, v)?.to_string();
                }
                _ => self.unknown(p),
            }
        }
        Ok(())
    }
}

/// The fields kproxy keeps without acting on them whose values differ from
/// upstream's defaults: what an operator may expect to matter.
pub fn ignored_fields(c: &Config) -> Vec<String> {
    let (u, d) = (&c.unused, Unused::default());
    let (l, dl) = (&c.logging, LoggingExtras::default());
    let (n, dn) = (&u.nftables, NfTables::default());
    let (w, dw) = (&u.winkernel, &d.winkernel);
    let checks = [
        ("featureGates", !u.feature_gates.is_empty()),
        ("enableProfiling", u.enable_profiling),
        (
            "showHiddenMetricsForVersion",
            !u.show_hidden_metrics_for_version.is_empty(),
        ),
        ("portRange", !u.port_range.is_empty()),
        ("windowsRunAsService", u.windows_run_as_service),
        (
            "logging.flushFrequency",
            l.flush_frequency != dl.flush_frequency,
        ),
        ("logging.vmodule", !l.vmodule.is_empty()),
        ("logging.options.text.splitStream", l.text_split_stream),
        ("logging.options.json.splitStream", l.json_split_stream),
        (
            "logging.options.text.infoBufferSize",
            crate::config::values::parse_quantity(&l.text_info_buffer_size) == Ok(false),
        ),
        (
            "logging.options.json.infoBufferSize",
            crate::config::values::parse_quantity(&l.json_info_buffer_size) == Ok(false),
        ),
        (
            "nftables.masqueradeAll",
            n.masquerade_all != dn.masquerade_all,
        ),
        (
            "nftables.masqueradeBit",
            n.masquerade_bit != dn.masquerade_bit,
        ),
        ("nftables.syncPeriod", n.sync_period != dn.sync_period),
        (
            "nftables.minSyncPeriod",
            n.min_sync_period != dn.min_sync_period,
        ),
        ("winkernel.networkName", w.network_name != dw.network_name),
        ("winkernel.sourceVip", w.source_vip != dw.source_vip),
        ("winkernel.enableDSR", w.enable_dsr != dw.enable_dsr),
        (
            "winkernel.rootHnsEndpointName",
            w.root_hns_endpoint_name != dw.root_hns_endpoint_name,
        ),
        (
            "winkernel.forwardHealthCheckVip",
            w.forward_health_check_vip != dw.forward_health_check_vip,
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(f, _)| f.to_string())
        .collect()
}
