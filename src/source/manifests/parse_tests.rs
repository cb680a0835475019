//! Generated and pathological text for one manifest file: random YAML and
//! JSON documents, deep nesting, an alias bomb. Properties: no panic, no
//! stack overflow on a tokio worker's stack; an error names the file, a
//! line inside it and a reason.

use std::path::Path;

use proptest::prelude::*;

use super::parse_text;
use crate::cluster::convert::ConvertOptions;
use crate::cluster::{ClusterState, SourceEvent};

/// A document of random YAML and JSON pieces, often shaped like an object.
fn document() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "apiVersion: v1\n",
            "kind: Service\n",
            "kind: EndpointSlice\n",
            "kind: List\n",
            "apiVersion: discovery.k8s.io/v1\n",
            "metadata: {name: a, namespace: b}\n",
            "spec:\n",
            "  ports:\n",
            "  - port: ",
            "80\n",
            "-1\n",
            "99999999999999999999\n",
            "  clusterIP: ",
            "items:\n",
            "- ",
            "---\n",
            "...\n",
            "%YAML 1.2\n",
            "&a ",
            "*a ",
            "[",
            "]",
            "{",
            "}",
            ",",
            ": ",
            "\"",
            "'",
            "#",
            "\n",
            "  ",
            "\t",
            "!!binary ",
            "{\"apiVersion\":\"v1\",\"kind\":\"Service\",",
            "\"spec\":",
            "null",
            "~",
            "\\",
        ])
        .prop_map(String::from),
        "\\PC{0,8}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

#[test]
fn fuzz_manifest_documents_parse_or_name_the_file_and_line() {
    crate::testing::fuzz("manifest documents", 2_000, document(), |text| {
        let lines = text.lines().count() as u64 + 1;
        for name in ["f.yaml", "f.json"] {
            let path = Path::new(name);
            match parse_text(path, &text) {
                Ok(objects) => {
                    // Whatever parsed converts or is refused, never a panic.
                    let mut state = ClusterState::new(ConvertOptions::default());
                    for o in objects {
                        let _ = state.apply(SourceEvent::Apply(o));
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e.path.as_path(), path);
                    prop_assert!(!e.reason.trim().is_empty(), "{e}");
                    prop_assert!(e.line.is_none_or(|l| l >= 1 && l <= lines), "{e}");
                }
            }
        }
        Ok(())
    });
}

/// Run `f` on a thread with a tokio worker's stack (2 MiB), where the
/// manifests source runs.
fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn deeply_nested_documents_are_refused_with_a_reason() {
    const DEPTH: usize = 100_000;
    let head = "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"deep\"}, \"spec\": ";
    let flow = format!("{head}{}1{}}}", "[".repeat(DEPTH), "]".repeat(DEPTH));
    let block = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: deep}}\nspec:\n  selector: {}1\n",
        "- ".repeat(DEPTH)
    );
    let mapping = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: deep}}\nspec: {}1{}\n",
        "{a: ".repeat(DEPTH),
        "}".repeat(DEPTH)
    );
    for (name, text) in [
        ("flow.yaml", flow.clone()),
        ("flow.json", flow),
        ("block.yaml", block),
        ("mapping.yaml", mapping),
    ] {
        let result = on_worker_stack(move || parse_text(Path::new(name), &text).map(|o| o.len()));
        let e = result.expect_err(name);
        assert!(!e.reason.is_empty(), "{name}: {e}");
    }
}

#[test]
fn an_alias_bomb_is_not_expanded() {
    // Nine levels of ten aliases each, a billion strings if expanded, in a
    // field the Service does not have and in one it has.
    let mut bomb = String::from("x0: &x0 [lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*x{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    let head = "apiVersion: v1\nkind: Service\nmetadata: {name: bomb, namespace: a}\n";
    let spec = "spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";
    let ignored = format!("{head}{bomb}{spec}");
    let typed = format!(
        "{head}{bomb}spec: {{clusterIP: 10.96.0.1, ports: [{{port: 80}}], selector: *x9}}\n"
    );
    // Text that is no YAML node grows the node budget, not the alias limit.
    let padded = format!("# {}\n{head}{bomb}{spec}", "x".repeat(2 << 20));
    for (name, text) in [("ignored", ignored), ("typed", typed), ("padded", padded)] {
        let result =
            on_worker_stack(move || parse_text(Path::new("bomb.yaml"), &text).map(|o| o.len()));
        match &result {
            Ok(n) => assert_eq!(*n, 1, "{name}"),
            Err(e) => assert!(!e.reason.is_empty(), "{name}: {e}"),
        }
        eprintln!("alias bomb, {name}: {result:?}");
    }
}
