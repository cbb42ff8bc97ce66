//! A bounded, deterministic stand-in for the fuzzer in CI: every fixture, truncated and with
//! bytes replaced at many points, goes through loading and validation. Errors are expected; a
//! panic fails the test. `scripts/fuzz.sh` runs the real coverage-guided fuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::path::Path;

use weft_api::load::LoadResult;
use weft_api::validate::check_loaded;

fn exercise(text: &str) {
    let mut r = LoadResult::default();
    r.load_str("mutant.yaml", text);
    for o in &r.objects {
        let _ = check_loaded(o, true);
        let _ = o.resource.to_json();
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // Replacement bytes chosen to break YAML structure and types in different ways.
    let replacements = [
        b"{", b"]", b":", b"-", b"\"", b"*", b"&", b"\n", b"9", b"\t", b"!", b"%",
    ];
    let mut runs = 0;
    for dir in ["seeds", "invalid"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let step = (bytes.len() / 24).max(1);
            for (k, at) in (0..bytes.len()).step_by(step).enumerate() {
                if let Ok(t) = std::str::from_utf8(&bytes[..at]) {
                    exercise(t);
                    runs += 1;
                }
                let mut m = bytes.clone();
                m[at] = replacements[k % replacements.len()][0];
                if let Ok(t) = std::str::from_utf8(&m) {
                    exercise(t);
                    runs += 1;
                }
            }
        }
    }
    assert!(runs > 5000, "only {runs} mutants ran");
}

#[test]
fn hostile_shapes_are_rejected_cleanly() {
    let big_list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        "- {apiVersion: v1, kind: ServiceAccount, metadata: {name: a}}\n".repeat(20_000)
    );
    let cases = [
        "[".repeat(200_000),
        "a: &a [x]\nb: [*a, *a, *a]\n".to_string(),
        "\u{feff}apiVersion: v1\nkind: Service\nmetadata: {name: bom}\n".to_string(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 99999999999999999999999}]}\n".to_string(),
        big_list,
        "--- !!binary aGVsbG8=\n".to_string(),
        "? [complex, key]\n: value\n".to_string(),
    ];
    for c in &cases {
        exercise(c);
    }
}
