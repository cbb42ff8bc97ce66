//! `weft validate` as a user runs it: exit codes, the line format, JSON output, stdin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .expect("run weft")
}

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn istio_samples_are_valid_and_counted() {
    let o = weft(&["validate", "-f", &repo("../shared/istio/samples")]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("245 objects valid ("), "{last}");
    assert!(
        last.contains("31 VirtualService") && last.contains("13 DestinationRule"),
        "{last}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("skipped 2 IstioOperator (install.istio.io/v1alpha1)"),
        "{err}"
    );
}

#[test]
fn every_error_is_printed_with_file_line_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n    - destination: {host: reviews, subset: v2}\n      weight: 20\n    retries:\n      attempts: -2\n",
    )
    .unwrap();
    let o = weft(&["validate", "-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let file = f.display().to_string();
    assert!(out.contains(&format!("{file}:9: VirtualService shop/reviews: spec.http[0].route: total destination weight 110 != 100")), "{out}");
    assert!(out.contains(&format!("{file}:15: VirtualService shop/reviews: spec.http[0].retries.attempts: attempts cannot be negative")), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("2 errors in 1 object"),
        "{out}"
    );
}

#[test]
fn json_output_for_machines() {
    let f = repo("crates/weft-api/tests/fixtures/invalid/001-vs-weights-not-100.yaml");
    let o = weft(&["validate", "-o", "json", "-f", &f]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["path"], "spec.http[0].route");
    assert_eq!(v["errors"][0]["kind"], "VirtualService");
    assert_eq!(v["errors"][0]["line"], 12);
    assert_eq!(
        v["errors"][0]["message"],
        "total destination weight 110 != 100"
    );
}

#[test]
fn strict_turns_unknown_fields_into_errors() {
    let f = repo("crates/weft-api/tests/fixtures/seeds/27-003-L982.yaml");
    let o = weft(&["validate", "-f", &f]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: AuthorizationPolicy default/httpbin: spec.rules[0].from[1].source.notPaths: unknown field"));
    let o = weft(&["validate", "--strict", "-f", &f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains(":24: AuthorizationPolicy default/httpbin: spec.rules[0].from[1].source.notPaths: unknown field"), "{}", stdout(&o));
}

#[test]
fn stdin_lists_json_and_folders() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["validate", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec:\n    ports: [{port: 80, name: http}]\n---\n{\"apiVersion\": \"networking.istio.io/v1\", \"kind\": \"DestinationRule\", \"metadata\": {\"name\": \"a\"}, \"spec\": {\"host\": \"a\"}}\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o).trim(),
        "2 objects valid (1 DestinationRule, 1 Service)"
    );

    let dir = tempfile::tempdir().unwrap();
    let nested: PathBuf = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(nested.join("dr.json"), r#"{"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "x"}, "spec": {"host": "x"}}"#).unwrap();
    std::fs::write(dir.path().join("a/notes.txt"), "not read").unwrap();
    std::fs::write(dir.path().join("se.yml"), "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {name: e}\nspec:\n  hosts: [e.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: DNS\n").unwrap();
    let o = weft(&["validate", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(
        stdout(&o).trim(),
        "2 objects valid (1 DestinationRule, 1 ServiceEntry)"
    );
}

#[test]
fn bad_input_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let deep = "[".repeat(100_000);
    let cases: &[(&str, &[u8])] = &[
        ("deep.yaml", deep.as_bytes()),
        ("binary.yaml", &[0xff, 0xfe, 0x00, 0x41]),
        (
            "tabs.yaml",
            b"apiVersion: v1\nkind: Service\nmetadata:\n\tname: x\n",
        ),
        (
            "type.yaml",
            b"apiVersion: v1\nkind: Service\nmetadata: [1, 2]\n",
        ),
    ];
    for (name, body) in cases {
        let f = dir.path().join(name);
        std::fs::write(&f, body).unwrap();
        let o = weft(&["validate", "-f", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stdout(&o));
        let first = stdout(&o).lines().next().unwrap_or("").to_string();
        assert!(
            first.starts_with(&format!("{}:", f.display())),
            "{name}: {first}"
        );
    }
    let o = weft(&["validate", "-f", "/nonexistent/file.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("cannot read"));
}

#[test]
fn help_lists_commands() {
    let o = weft(&["--help"]);
    let text = stdout(&o);
    for (command, says) in [
        ("validate", "Check Istio and Kubernetes YAML"),
        ("proxy", "Run the proxy from an Envoy v3 bootstrap"),
        ("control-plane", "Run the control plane"),
        ("up", "Run a mesh on this machine"),
        ("demo", "The canary tutorial end to end"),
        ("proxy-status", "Where each proxy stands"),
        ("proxy-config", "A proxy's listeners, routes"),
    ] {
        let listed = text.lines().any(|l| {
            let l = l.trim_start();
            l.strip_prefix(command)
                .is_some_and(|rest| rest.starts_with(' ') && rest.trim_start().starts_with(says))
        });
        assert!(listed, "{command}: {text}");
    }
}
