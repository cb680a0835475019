//! The store: last-good versions, Replace semantics, change tracking.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;

fn service(name: &str, cluster_ip: &str) -> Object {
    service_json(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"clusterIP": cluster_ip, "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
}

fn service_json(v: Value) -> Object {
    Object::Service(Box::new(serde_json::from_value(v).unwrap()))
}

fn slice(name: &str, service: &str, addrs: &[&str]) -> Object {
    let endpoints: Vec<Value> = addrs.iter().map(|a| json!({"addresses": [a]})).collect();
    Object::EndpointSlice(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints
        }))
        .unwrap(),
    ))
}

fn node(name: &str, zone: &str) -> Object {
    Object::Node(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}
        }))
        .unwrap(),
    ))
}

fn name(n: &str) -> ServiceName {
    ServiceName::new("shop", n)
}

fn names(v: &[&str]) -> Option<BTreeSet<ServiceName>> {
    Some(v.iter().map(|n| name(n)).collect())
}

fn store() -> ClusterState {
    ClusterState::new(ConvertOptions {
        node_name: "node-1".into(),
    })
}

fn endpoint_addrs(st: &ClusterState, svc: &str) -> Vec<String> {
    let mut v: Vec<String> = st
        .slices_for(&name(svc))
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.addr.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_update_keeps_the_last_good_version() {
    let mut st = store();
    assert!(
        st.apply(SourceEvent::Apply(service("web", "10.96.0.10")))
            .is_empty()
    );
    assert_eq!(st.take_changes(), names(&["web"]));

    let problems = st.apply(SourceEvent::Apply(service("web", "10.96.0.300")));
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].object,
        ObjectRef::new(Kind::Service, "shop", "web")
    );
    assert!(
        problems[0]
            .reason
            .contains("\"10.96.0.300\" is not a valid IP address")
    );
    // Still serving the old version; nothing to re-plan.
    let kept = st.service(&name("web")).unwrap();
    assert_eq!(
        kept.cluster_ips,
        vec!["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(st.take_changes(), names(&[]));
    assert_eq!(st.rejected().cloned().collect::<Vec<_>>(), problems);

    // A fixed version replaces it and clears the record.
    assert!(
        st.apply(SourceEvent::Apply(service("web", "10.96.0.11")))
            .is_empty()
    );
    assert_eq!(st.rejected().count(), 0);
    assert_eq!(st.take_changes(), names(&["web"]));
}

#[test]
fn refused_object_does_not_disturb_others() {
    let mut st = store();
    st.apply(SourceEvent::Apply(service("web", "10.96.0.10")));
    st.apply(SourceEvent::Apply(slice("web-1", "web", &["10.244.1.5"])));
    st.take_changes();
    let problems = st.apply(SourceEvent::Replace(
        Kind::Service,
        vec![service("web", "10.96.0.10"), service("api", "not-an-ip")],
    ));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].object.name, "api");
    assert!(st.service(&name("api")).is_none());
    assert_eq!(st.take_changes(), names(&[]), "web is unchanged");
    assert_eq!(endpoint_addrs(&st, "web"), vec!["10.244.1.5"]);
}

#[test]
fn replace_removes_what_is_not_listed() {
    let mut st = store();
    st.apply(SourceEvent::Replace(
        Kind::Service,
        vec![
            service("a", "10.96.0.1"),
            service("b", "10.96.0.2"),
            service("c", "bad"),
        ],
    ));
    st.apply(SourceEvent::Replace(
        Kind::EndpointSlice,
        vec![
            slice("a-1", "a", &["10.244.0.1"]),
            slice("b-1", "b", &["10.244.0.2"]),
        ],
    ));
    assert_eq!(st.rejected().count(), 1);
    st.take_changes();

    st.apply(SourceEvent::Replace(
        Kind::Service,
        vec![service("a", "10.96.0.1")],
    ));
    let left: Vec<_> = st.services().map(|s| s.name.name.clone()).collect();
    assert_eq!(left, vec!["a"]);
    assert_eq!(
        st.rejected().count(),
        0,
        "c is no longer listed, so no longer refused"
    );
    assert_eq!(st.take_changes(), names(&["b"]));

    st.apply(SourceEvent::Replace(Kind::EndpointSlice, vec![]));
    assert!(endpoint_addrs(&st, "a").is_empty());
    assert!(endpoint_addrs(&st, "b").is_empty());
    assert_eq!(st.take_changes(), names(&["a", "b"]));
    // Services are untouched by a Replace of another kind.
    assert!(st.service(&name("a")).is_some());
}

#[test]
fn slice_moves_when_its_service_label_changes() {
    let mut st = store();
    st.apply(SourceEvent::Apply(slice("s-1", "a", &["10.244.0.1"])));
    assert_eq!(endpoint_addrs(&st, "a"), vec!["10.244.0.1"]);
    st.take_changes();

    st.apply(SourceEvent::Apply(slice("s-1", "b", &["10.244.0.1"])));
    assert!(endpoint_addrs(&st, "a").is_empty());
    assert_eq!(endpoint_addrs(&st, "b"), vec!["10.244.0.1"]);
    assert_eq!(st.take_changes(), names(&["a", "b"]));

    st.apply(SourceEvent::Delete(ObjectRef::new(
        Kind::EndpointSlice,
        "shop",
        "s-1",
    )));
    assert!(endpoint_addrs(&st, "b").is_empty());
    assert_eq!(st.take_changes(), names(&["b"]));
}

#[test]
fn nodes_other_than_this_one_are_ignored() {
    let mut st = store();
    assert!(
        st.apply(SourceEvent::Apply(node("node-2", "zone-b")))
            .is_empty()
    );
    assert!(st.node().is_none());
    assert_eq!(st.take_changes(), names(&[]));

    st.apply(SourceEvent::Apply(node("node-1", "zone-a")));
    assert_eq!(st.node().unwrap().zone.as_deref(), Some("zone-a"));
    assert_eq!(
        st.take_changes(),
        None,
        "a node change affects every Service"
    );

    // Another node's update neither replaces ours nor marks anything.
    st.apply(SourceEvent::Apply(node("node-2", "zone-c")));
    assert_eq!(st.node().unwrap().name, "node-1");
    assert_eq!(st.take_changes(), names(&[]));

    // A Replace listing only other nodes removes ours.
    st.apply(SourceEvent::Replace(
        Kind::Node,
        vec![node("node-2", "zone-b")],
    ));
    assert!(st.node().is_none());
    assert_eq!(st.take_changes(), None);
}

#[test]
fn take_changes_reports_exactly_the_changed_services() {
    let mut st = store();
    st.apply(SourceEvent::Replace(
        Kind::Service,
        vec![
            service("a", "10.96.0.1"),
            service("b", "10.96.0.2"),
            service("c", "10.96.0.3"),
        ],
    ));
    st.apply(SourceEvent::Replace(
        Kind::EndpointSlice,
        vec![
            slice("a-1", "a", &["10.244.0.1"]),
            slice("b-1", "b", &["10.244.0.2"]),
        ],
    ));
    assert_eq!(st.take_changes(), names(&["a", "b", "c"]));
    assert_eq!(st.take_changes(), names(&[]), "taking clears");

    // The same objects again: nothing changed.
    st.apply(SourceEvent::Apply(service("a", "10.96.0.1")));
    st.apply(SourceEvent::Apply(slice("b-1", "b", &["10.244.0.2"])));
    assert_eq!(st.take_changes(), names(&[]));

    // One endpoint added to b, c's cluster IP changed.
    st.apply(SourceEvent::Apply(slice(
        "b-1",
        "b",
        &["10.244.0.2", "10.244.0.3"],
    )));
    st.apply(SourceEvent::Apply(service("c", "10.96.0.33")));
    assert_eq!(st.take_changes(), names(&["b", "c"]));

    // Slices for a Service that does not exist yet still mark it.
    st.apply(SourceEvent::Apply(slice("d-1", "d", &["10.244.0.4"])));
    assert_eq!(st.take_changes(), names(&["d"]));
}

#[test]
fn mirrored_endpoints_count_only_without_a_selector() {
    let mut st = store();
    let endpoints = Object::Endpoints(Box::new(
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "subsets": [{"addresses": [{"ip": "192.168.10.5"}], "ports": [{"name": "http", "port": 5432}]}]
        }))
        .unwrap(),
    ));
    st.apply(SourceEvent::Apply(endpoints));
    st.apply(SourceEvent::Apply(service("db", "10.96.0.5")));
    assert!(endpoint_addrs(&st, "db").is_empty(), "db has a selector");

    st.apply(SourceEvent::Apply(service_json(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 5432}]}
    }))));
    assert_eq!(endpoint_addrs(&st, "db"), vec!["192.168.10.5"]);

    st.apply(SourceEvent::Delete(ObjectRef::new(
        Kind::Endpoints,
        "shop",
        "db",
    )));
    assert!(endpoint_addrs(&st, "db").is_empty());
}

#[test]
fn bad_slice_update_keeps_the_old_endpoints() {
    let mut st = store();
    st.apply(SourceEvent::Apply(slice("a-1", "a", &["10.244.0.1"])));
    st.take_changes();
    // Losing the service label refuses the slice; the old one stays put.
    let mut bad = slice("a-1", "a", &["10.244.0.9"]);
    if let Object::EndpointSlice(s) = &mut bad {
        s.metadata.labels = None;
    }
    let problems = st.apply(SourceEvent::Apply(bad));
    assert_eq!(problems.len(), 1);
    assert_eq!(endpoint_addrs(&st, "a"), vec!["10.244.0.1"]);
    assert_eq!(st.take_changes(), names(&[]));
}
