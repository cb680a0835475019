//! Generated input for the manifests directory, the conversion behind it
//! and the planners after it: valid Services and EndpointSlices with bad
//! ones beside them (mutations of valid ones: wrong types, out-of-range and
//! huge numbers, deep nesting, invalid UTF-8), and a slice of 100,000
//! endpoints. Properties: no panic; a file that cannot be read or parsed is
//! named with a reason; a refused object is named with the field at fault;
//! the plans (IPVS and iptables) for the valid objects are the plans of the
//! valid objects alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::Loader;
use crate::cluster::convert::ConvertOptions;
use crate::cluster::{ClusterState, IpFamily, Kind, Object, ObjectRef, SourceEvent};
use crate::iptables::planner::plan as iptables_plan;
use crate::ipvs::{IpvsPlan, NodeContext, PlanConfig, plan};
use crate::kernel::link::LocalAddress;

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// A valid Service and its EndpointSlice, in a few numbers.
#[derive(Clone, Debug)]
struct Svc {
    /// 0 ClusterIP, 1 NodePort, 2 LoadBalancer.
    service_type: u8,
    v6: bool,
    local: bool,
    affinity: bool,
    /// (port, protocol) → targetPort.
    ports: Vec<((u16, usize), u16)>,
    /// host → (ready, serving, terminating, on this node).
    endpoints: Vec<(u8, (bool, bool, bool, bool))>,
}

fn svc() -> impl Strategy<Value = Svc> {
    (
        0..3u8,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::btree_map((1..=65535u16, 0..3usize), 1..=65535u16, 1..4),
        prop::collection::btree_map(1..=254u8, any::<(bool, bool, bool, bool)>(), 0..6),
    )
        .prop_map(
            |(service_type, v6, local, affinity, ports, endpoints)| Svc {
                service_type,
                v6,
                local,
                affinity,
                ports: ports.into_iter().collect(),
                endpoints: endpoints.into_iter().collect(),
            },
        )
}

/// The Service `name` in `ns`; `block` keeps the addresses and NodePorts of
/// different groups apart (0 for the valid objects, 1 for the bad ones).
fn service_json(i: usize, s: &Svc, ns: &str, name: &str, block: usize) -> Value {
    let ip = if s.v6 {
        format!("fd00:{block}::{:x}", i + 1)
    } else {
        format!("10.{}.{}.{}", 96 + block, i / 250, i % 250 + 1)
    };
    let service_type = ["ClusterIP", "NodePort", "LoadBalancer"][s.service_type as usize];
    let ports: Vec<Value> = s
        .ports
        .iter()
        .enumerate()
        .map(|(k, ((port, proto), target))| {
            let mut p = json!({
                "name": format!("p{k}"), "protocol": PROTOCOLS[*proto],
                "port": port, "targetPort": target,
            });
            if s.service_type > 0 {
                p["nodePort"] = json!(30000 + block * 5000 + i * 4 + k);
            }
            p
        })
        .collect();
    let mut spec = json!({
        "type": service_type, "clusterIP": ip, "selector": {"app": name}, "ports": ports,
    });
    if s.service_type > 0 && s.local {
        spec["externalTrafficPolicy"] = json!("Local");
    }
    if s.affinity {
        spec["sessionAffinity"] = json!("ClientIP");
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    })
}

fn slice_json(i: usize, s: &Svc, ns: &str, service: &str, name: &str, block: usize) -> Value {
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .map(|(h, (ready, serving, terminating, here))| {
            let addr = if s.v6 {
                format!("fd00:{:x}::{:x}:{h:x}", 244 + block, i + 1)
            } else {
                format!("10.{}.{}.{h}", 244 + block, i % 250)
            };
            json!({
                "addresses": [addr],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": if *here { "node-1" } else { "node-2" },
            })
        })
        .collect();
    let ports: Vec<Value> = s
        .ports
        .iter()
        .enumerate()
        .map(|(k, ((_, proto), target))| {
            json!({"name": format!("p{k}"), "protocol": PROTOCOLS[*proto], "port": target})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": if s.v6 { "IPv6" } else { "IPv4" },
        "ports": ports, "endpoints": endpoints,
    })
}

/// `depth` nested lists, innermost a number.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| json!([v]))
}

/// What makes a bad object bad.
#[derive(Clone, Debug)]
enum Mutation {
    /// Conversion refuses the object; its reason names `field`.
    Refused {
        pointer: &'static str,
        value: Value,
        field: &'static str,
    },
    /// The value has the wrong type (or does not fit it): the file holding
    /// the object does not parse.
    Unparsable { pointer: &'static str, value: Value },
    /// The file holds an invalid UTF-8 byte at this offset.
    InvalidUtf8(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let refused = |pointer, field, values: Vec<Value>| {
        prop::sample::select(values).prop_map(move |value| Mutation::Refused {
            pointer,
            value,
            field,
        })
    };
    let unparsable = |pointer, values: Vec<Value>| {
        prop::sample::select(values).prop_map(move |value| Mutation::Unparsable { pointer, value })
    };
    let huge = vec![
        json!("eighty"),
        json!(1.5),
        json!(1e30),
        json!(4294967296i64),
        json!(-4294967296i64),
        json!(u64::MAX),
        json!(true),
        json!([80]),
        json!({"port": 80}),
    ];
    prop_oneof![
        refused(
            "/spec/clusterIP",
            "spec.clusterIP",
            vec![
                json!("10.96.0.999"),
                json!("junk"),
                json!("1.2.3"),
                json!("10.96.0.1/32"),
                json!(" 10.96.0.1"),
                json!("fd00::g"),
            ]
        ),
        refused(
            "/spec/ports/0/port",
            "spec.ports[0].port",
            vec![
                json!(0),
                json!(70000),
                json!(-1),
                json!(i32::MAX),
                json!(i32::MIN),
            ]
        ),
        refused(
            "/spec/ports/0/protocol",
            "spec.ports[0].protocol",
            vec![json!("ICMP"), json!("tcp"), json!("TCP "),]
        ),
        refused(
            "/spec/ports/0/targetPort",
            "spec.ports[0].targetPort",
            vec![json!(-5), json!(70000), json!("no_such!"), json!("8080"),]
        ),
        refused(
            "/spec/ports/0/name",
            "spec.ports[0].name",
            vec![json!("Bad_Name"), json!("-x"), json!("a".repeat(64)),]
        ),
        refused(
            "/spec/type",
            "spec.type",
            vec![json!("Bogus"), json!("clusterip")]
        ),
        refused(
            "/spec/sessionAffinity",
            "spec.sessionAffinity",
            vec![json!("Sticky")]
        ),
        refused(
            "/spec/externalIPs",
            "spec.externalIPs[0]",
            vec![json!(["1.2.3.999"])]
        ),
        refused("/spec/ports", "spec.ports", vec![json!([])]),
        refused("/spec", "spec", vec![Value::Null]),
        unparsable("/spec/ports/0/port", huge.clone()),
        unparsable("/spec/ports/0/nodePort", huge),
        unparsable("/spec/ports", vec![json!("x"), json!(5), json!({"a": 1})]),
        unparsable("/spec", vec![json!("a string"), json!([1, 2])]),
        unparsable("/metadata", vec![json!(5), json!([])]),
        (10..200usize).prop_map(|d| Mutation::Unparsable {
            pointer: "/spec/selector",
            value: nested(d),
        }),
        any::<usize>().prop_map(Mutation::InvalidUtf8),
    ]
}

/// A manifest file's text: JSON (a List of `docs`), or YAML documents
/// written as flow-style JSON or as block YAML.
fn render(docs: &[Value], json: bool, block_yaml: bool) -> String {
    if json {
        return serde_json::to_string_pretty(
            &json!({"apiVersion": "v1", "kind": "List", "items": docs}),
        )
        .unwrap();
    }
    docs.iter()
        .map(|d| {
            let body = if block_yaml {
                serde_saphyr::to_string(d).unwrap()
            } else {
                serde_json::to_string(d).unwrap()
            };
            format!("---\n{body}\n")
        })
        .collect()
}

/// A case: valid Services with their slices, bad Services (each with a
/// slice), refused slices for valid Services, and how files are laid out.
#[derive(Clone, Debug)]
struct Case {
    valid: Vec<Svc>,
    bad: Vec<(Svc, Mutation)>,
    /// Valid Services that get a second slice, refused (addressType IPv5).
    refused_slices: Vec<usize>,
    /// Files the valid objects are spread over, and per file: JSON, block YAML.
    files: Vec<(bool, bool)>,
    seed: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(svc(), 0..6),
        prop::collection::vec((svc(), mutation()), 0..5),
        prop::collection::vec(any::<usize>(), 0..3),
        prop::collection::vec(any::<(bool, bool)>(), 1..4),
        any::<usize>(),
    )
        .prop_map(|(valid, bad, refused_slices, files, seed)| Case {
            valid,
            bad,
            refused_slices,
            files,
            seed,
        })
}

fn ns(i: usize) -> String {
    format!("ns-{}", i % 3)
}

/// The valid objects alone, as values.
fn valid_docs(case: &Case) -> Vec<Value> {
    let mut docs = Vec::new();
    for (i, s) in case.valid.iter().enumerate() {
        let name = format!("svc-{i}");
        docs.push(service_json(i, s, &ns(i), &name, 0));
        docs.push(slice_json(i, s, &ns(i), &name, &format!("{name}-a"), 0));
    }
    docs
}

/// What the directory is expected to refuse.
#[derive(Default)]
struct Expected {
    /// Files that must fail to read or parse.
    bad_files: BTreeSet<PathBuf>,
    /// Objects conversion must refuse, with the field its reason names.
    refused: Vec<(ObjectRef, &'static str)>,
}

/// Write the case into `dir`; returns what must be refused.
fn write_case(dir: &Path, case: &Case) -> Expected {
    let mut expected = Expected::default();
    let mut in_files: Vec<Vec<Value>> = vec![Vec::new(); case.files.len()];
    let mut spread = case.seed;
    let mut place = |doc: Value, files: &mut Vec<Vec<Value>>| {
        spread = spread
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = files.len();
        files[(spread >> 33) % n].push(doc);
    };
    for doc in valid_docs(case) {
        place(doc, &mut in_files);
    }
    for (n, i) in case.refused_slices.iter().enumerate() {
        if case.valid.is_empty() {
            break;
        }
        let i = i % case.valid.len();
        let name = format!("svc-{i}-refused-{n}");
        let mut slice = slice_json(i, &case.valid[i], &ns(i), &format!("svc-{i}"), &name, 1);
        slice["addressType"] = json!("IPv5");
        expected.refused.push((
            ObjectRef::new(Kind::EndpointSlice, ns(i), name),
            "addressType",
        ));
        place(slice, &mut in_files);
    }
    for (j, (s, m)) in case.bad.iter().enumerate() {
        let name = format!("bad-{j}");
        let mut service = service_json(j, s, "bad", &name, 1);
        let slice = slice_json(j, s, "bad", &name, &format!("{name}-a"), 1);
        match m {
            Mutation::Refused {
                pointer,
                value,
                field,
            } => {
                if let Some(v) = service.pointer_mut(pointer) {
                    *v = value.clone();
                } else {
                    // A field the generated Service leaves out.
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    service.pointer_mut(parent).unwrap()[key] = value.clone();
                }
                expected
                    .refused
                    .push((ObjectRef::new(Kind::Service, "bad", &name), field));
                place(service, &mut in_files);
                place(slice, &mut in_files);
            }
            Mutation::Unparsable { pointer, value } => {
                if let Some(v) = service.pointer_mut(pointer) {
                    *v = value.clone();
                } else {
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    service.pointer_mut(parent).unwrap()[key] = value.clone();
                }
                let json = j % 2 == 0;
                let path = dir.join(format!("bad-{j}.{}", if json { "json" } else { "yaml" }));
                let text = if json {
                    serde_json::to_string(&service).unwrap()
                } else {
                    render(&[slice, service], false, j % 4 == 1)
                };
                std::fs::write(&path, text).unwrap();
                expected.bad_files.insert(path);
            }
            Mutation::InvalidUtf8(at) => {
                let mut bytes = render(&[service, slice], false, true).into_bytes();
                let at = at % (bytes.len() + 1);
                bytes.insert(at, 0xff);
                let path = dir.join(format!("bad-{j}.yaml"));
                std::fs::write(&path, bytes).unwrap();
                expected.bad_files.insert(path);
            }
        }
    }
    for (k, (docs, (json, block))) in in_files.iter().zip(&case.files).enumerate() {
        let name = format!("objects-{k}.{}", if *json { "json" } else { "yaml" });
        std::fs::write(dir.join(name), render(docs, *json, *block)).unwrap();
    }
    expected
}

fn node() -> NodeContext {
    let la = |ifname: &str, a: &str| LocalAddress {
        ifname: ifname.into(),
        addr: a.parse().unwrap(),
    };
    NodeContext {
        name: "node-1".into(),
        zone: None,
        pod_cidrs: Vec::new(),
        node_addresses: Vec::new(),
        local_addresses: vec![
            la("lo", "127.0.0.1"),
            la("eth0", "192.168.58.2"),
            la("eth0", "fd00:58::2"),
        ],
    }
}

fn store() -> ClusterState {
    ClusterState::new(ConvertOptions {
        node_name: "node-1".into(),
    })
}

/// The plan of the valid objects alone, straight from their values, and
/// their store.
fn plan_of_valid(case: &Case) -> (IpvsPlan, ClusterState) {
    let mut state = store();
    let mut by_kind: std::collections::BTreeMap<Kind, Vec<Object>> = Default::default();
    for doc in valid_docs(case) {
        let obj = if doc["kind"] == "Service" {
            Object::Service(Box::new(serde_json::from_value(doc).unwrap()))
        } else {
            Object::EndpointSlice(Box::new(serde_json::from_value(doc).unwrap()))
        };
        by_kind.entry(obj.kind()).or_default().push(obj);
    }
    for (kind, objs) in by_kind {
        let problems = state.apply(SourceEvent::Replace(kind, objs));
        assert!(problems.is_empty(), "valid objects refused: {problems:?}");
    }
    (plan(&state, &node(), &PlanConfig::default()), state)
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_case(dir.path(), case);
    let mut state = store();
    let mut problems = Vec::new();
    let load = Loader::new(dir.path()).reload(&mut |e| problems.extend(state.apply(e)));
    let failed: BTreeSet<PathBuf> = load.errors.iter().map(|e| e.path.clone()).collect();
    prop_assert_eq!(&failed, &expected.bad_files, "{:?}", load.errors);
    for e in &load.errors {
        prop_assert!(!e.reason.trim().is_empty(), "{e}");
    }
    for (object, field) in &expected.refused {
        let p = problems.iter().find(|p| &p.object == object);
        prop_assert!(p.is_some(), "{object} was not refused: {problems:?}");
        let reason = &p.unwrap().reason;
        prop_assert!(
            reason.contains(field),
            "{object}: {reason:?} does not name {field}"
        );
    }
    for p in &problems {
        // Only bad objects are refused, and each names itself.
        prop_assert!(
            p.object.namespace == "bad" || p.object.name.contains("-refused-"),
            "a valid object was refused: {p}"
        );
        prop_assert!(!p.reason.trim().is_empty(), "{p}");
    }
    let (want, valid) = plan_of_valid(case);
    prop_assert_eq!(plan(&state, &node(), &PlanConfig::default()), want);
    let config = crate::config::Config::default();
    for family in [IpFamily::V4, IpFamily::V6] {
        let got = iptables_plan(&state, &Default::default(), &config, family);
        let want = iptables_plan(&valid, &Default::default(), &config, family);
        prop_assert_eq!((got.ruleset, got.services), (want.ruleset, want.services));
    }
    Ok(())
}

#[test]
fn fuzz_manifests_bad_objects_leave_the_plan_of_the_valid_ones_unchanged() {
    crate::testing::fuzz("manifests beside bad objects", 400, case(), |case| {
        check(&case)
    });
}

/// One Service and a slice of `n` endpoints, in the file format of `name`.
fn large_slice_file(n: usize, name: &str) -> String {
    let s = Svc {
        service_type: 1,
        v6: false,
        local: false,
        affinity: false,
        ports: vec![((80, 0), 8080)],
        endpoints: Vec::new(),
    };
    let mut slice = slice_json(0, &s, "big", "web", "web-a", 0);
    slice["endpoints"] = (0..n)
        .map(|i| {
            json!({
                "addresses": [format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256)],
                "conditions": {"ready": true},
                "nodeName": "node-2",
            })
        })
        .collect();
    let docs = [service_json(0, &s, "big", "web", 0), slice];
    render(&docs, name.ends_with(".json"), true)
}

#[test]
fn an_endpoint_slice_of_100000_endpoints_is_programmed() {
    const N: usize = 100_000;
    for name in ["big.json", "big.yaml"] {
        let text = large_slice_file(N, name);
        let started = std::time::Instant::now();
        let objects = crate::source::manifests::parse_text(Path::new(name), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut state = store();
        for o in objects {
            let problems = state.apply(SourceEvent::Apply(o));
            assert!(problems.is_empty(), "{problems:?}");
        }
        let p = plan(&state, &node(), &PlanConfig::default());
        // The cluster IP and the NodePorts, each with every endpoint.
        assert!(p.table.services.len() >= 2, "{name}");
        for entry in p.table.services.values() {
            assert_eq!(entry.dests.len(), N, "{name}");
        }
        eprintln!(
            "{name}: {N} endpoints parsed, converted and planned in {:?}",
            started.elapsed()
        );
    }
}
