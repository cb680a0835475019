//! Every manifest in deploy/ parses as the Kubernetes object it claims to
//! be, the pieces refer to each other correctly, and the embedded
//! KubeProxyConfiguration loads with kproxy's own loader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kproxy::config::ProxyMode;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML file in deploy/, by kind (one object per file).
fn manifests() -> BTreeMap<String, (PathBuf, Value)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(deploy_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        let kind = v["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no kind", path.display()))
            .to_string();
        assert!(
            out.insert(kind.clone(), (path, v)).is_none(),
            "two {kind} manifests"
        );
    }
    out
}

/// Deserialize with the k8s-openapi type, which checks apiVersion and kind
/// and every field's type; unknown fields are refused too.
fn typed<T: DeserializeOwned + serde::Serialize>(
    m: &BTreeMap<String, (PathBuf, Value)>,
    kind: &str,
) -> T {
    let (path, v) = m.get(kind).unwrap_or_else(|| panic!("no {kind} manifest"));
    let obj: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{}: not a valid {kind}: {e}", path.display()));
    // A field k8s-openapi does not know would be dropped silently by
    // deserialization: compare the round trip with the source.
    let back = serde_json::to_value(&obj).unwrap();
    assert_eq!(
        strip_nulls(back),
        strip_nulls(v.clone()),
        "{}: fields lost in parsing (misspelled or misplaced?)",
        path.display()
    );
    obj
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

#[test]
fn every_manifest_is_a_valid_object() {
    let m = manifests();
    let kinds: Vec<_> = m.keys().cloned().collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
    let _: ServiceAccount = typed(&m, "ServiceAccount");
    let _: ClusterRole = typed(&m, "ClusterRole");
    let _: ClusterRoleBinding = typed(&m, "ClusterRoleBinding");
    let _: ConfigMap = typed(&m, "ConfigMap");
    let _: DaemonSet = typed(&m, "DaemonSet");
}

#[test]
fn the_role_is_least_privilege() {
    let m = manifests();
    let role: ClusterRole = typed(&m, "ClusterRole");
    let mut granted = Vec::new();
    for rule in role.rules.unwrap() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.unwrap() {
            for res in rule.resources.as_ref().unwrap() {
                for verb in &rule.verbs {
                    granted.push(format!("{group}/{res}:{verb}"));
                }
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            "/events:create",
            "/events:patch",
            "/nodes:get",
            "/nodes:list",
            "/nodes:watch",
            "/services:get",
            "/services:list",
            "/services:watch",
            "discovery.k8s.io/endpointslices:get",
            "discovery.k8s.io/endpointslices:list",
            "discovery.k8s.io/endpointslices:watch",
            "events.k8s.io/events:create",
            "events.k8s.io/events:patch",
        ]
    );

    let sa: ServiceAccount = typed(&m, "ServiceAccount");
    let binding: ClusterRoleBinding = typed(&m, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
}

#[test]
fn the_daemonset_runs_like_kube_proxy() {
    let m = manifests();
    let ds: DaemonSet = typed(&m, "DaemonSet");
    let sa: ServiceAccount = typed(&m, "ServiceAccount");
    let cm: ConfigMap = typed(&m, "ConfigMap");
    let spec = ds.spec;
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
    assert_eq!(
        pod.node_selector
            .unwrap()
            .get("kubernetes.io/os")
            .map(String::as_str),
        Some("linux")
    );
    // Tolerates every taint, as kube-proxy.
    assert!(
        pod.tolerations
            .unwrap()
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none())
    );
    let selector = spec.selector.match_labels.unwrap();
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));

    let c = &pod.containers[0];
    assert!(c.security_context.as_ref().unwrap().privileged == Some(true));
    let cmd = c.command.clone().unwrap();
    assert!(
        cmd.contains(&"--hostname-override=$(NODE_NAME)".to_string()),
        "{cmd:?}"
    );
    let env = c.env.as_ref().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    let field = node_name
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");

    let volumes = pod.volumes.unwrap();
    let mounts = c.volume_mounts.as_ref().unwrap();
    let mount = |path: &str| {
        let m = mounts
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("no mount at {path}"));
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        (m.clone(), v.clone())
    };
    let (m, v) = mount("/lib/modules");
    assert_eq!(m.read_only, Some(true));
    assert_eq!(v.host_path.unwrap().path, "/lib/modules");
    let (m, v) = mount("/run/xtables.lock");
    assert_ne!(m.read_only, Some(true), "iptables must take the lock");
    let hp = v.host_path.unwrap();
    assert_eq!(hp.path, "/run/xtables.lock");
    assert_eq!(hp.type_.as_deref(), Some("FileOrCreate"));

    // --config names a key of the mounted ConfigMap.
    let config_arg = cmd
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .expect("--config");
    let (dir, key) = config_arg.rsplit_once('/').unwrap();
    let (_, v) = mount(dir);
    assert_eq!(v.config_map.unwrap().name, cm.metadata.name.unwrap());
    assert!(cm.data.as_ref().unwrap().contains_key(key));

    // The probe hits the healthz port the config binds.
    let probe = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/livez"));
    let loaded = kproxy::config::file::parse(&cm.data.unwrap()[key]).unwrap();
    let port = loaded.config.healthz_bind_address.unwrap().port();
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port.into())
    );
}

#[test]
fn the_configmap_holds_a_config_kproxy_loads() {
    let m = manifests();
    let cm: ConfigMap = typed(&m, "ConfigMap");
    let data = cm.data.unwrap();
    let loaded = kproxy::config::file::parse(&data["config.conf"])
        .unwrap_or_else(|e| panic!("config.conf: {e}"));
    assert!(loaded.ignored.is_empty(), "{:?}", loaded.ignored);
    let c = loaded.config;
    assert_eq!(c.mode, Some(ProxyMode::Ipvs));
    // The kubeconfig it names is the other key, in the same mounted directory.
    let kc_path = c.kubeconfig.unwrap();
    assert_eq!(kc_path.parent(), Some(Path::new("/var/lib/kproxy")));
    let kc_key = kc_path.file_name().unwrap().to_str().unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&data[kc_key]).unwrap();
    let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(
        user.token_file.as_deref(),
        Some("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    assert!(cluster.server.as_deref().unwrap().starts_with("https://"));
}
