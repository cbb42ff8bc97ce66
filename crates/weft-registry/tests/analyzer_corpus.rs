//! Istio's own analyzer tests (`../shared/istio/analyzer/expectations.json`, transcribed from
//! `analyzers_test.go`): each case runs its one analyzer on its input files plus the default
//! resources, with namespace `""` as upstream selects, and must produce exactly the expected
//! multiset of (code, resource). A case whose analyzer Weft lacks fails. The pass count may
//! only go up: `PASSING` is the floor, and the README reports the figure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weft_api::load::LoadResult;
use weft_api::types::mesh::MeshConfig;
use weft_registry::analysis::{self, Context};

/// Cases that pass today; raise it as analyzers land.
const PASSING: usize = 105;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/istio/analyzer")
}

fn local(upstream: &str) -> PathBuf {
    shared().join(upstream.replace("pkg/config/analysis/analyzers/", ""))
}

/// What one case produced, or why it could not run.
fn run(case: &Value) -> Result<Vec<(String, String)>, String> {
    let name = case["analyzer"].as_str().unwrap_or("");
    let analyzer = analysis::analyzer(name).ok_or(format!("no analyzer {name}"))?;
    let mut loaded = LoadResult::default();
    for f in case["input_files"].as_array().into_iter().flatten() {
        loaded.load_path(&local(f.as_str().unwrap_or("")));
    }
    // Each cluster's files, loaded as one more set of objects whose files say the cluster.
    let mut cluster_by_file = BTreeMap::new();
    for (cluster, files) in case["multicluster"].as_object().into_iter().flatten() {
        for f in files.as_array().into_iter().flatten() {
            let path = local(f.as_str().unwrap_or(""));
            loaded.load_path(&path);
            cluster_by_file.insert(path.display().to_string(), cluster.clone());
        }
    }
    let mesh = match case["mesh_config_file"].as_str() {
        Some(f) => {
            let text = std::fs::read_to_string(local(f)).map_err(|e| e.to_string())?;
            MeshConfig::from_yaml(&text)?
        }
        None => MeshConfig::default(),
    };
    let mut objects = loaded.objects;
    objects.append(&mut loaded.others);
    let mut ctx = Context::new(objects, "", mesh);
    ctx.cluster_by_file = cluster_by_file;
    if let Some(f) = case["mesh_networks_file"].as_str() {
        let text = std::fs::read_to_string(local(f)).map_err(|e| e.to_string())?;
        let docs = weft_api::yaml::parse_stream(&text).map_err(|e| e.to_string())?;
        ctx.mesh_networks = docs.first().map(|d| d.to_json());
    }
    Ok(analysis::analyze(&ctx, &[analyzer])
        .into_iter()
        .map(|m| (m.message_type.code.to_string(), m.resource.to_string()))
        .collect())
}

#[test]
fn istios_analyzer_cases() {
    let text = std::fs::read_to_string(shared().join("expectations.json"))
        .expect("../shared/istio/analyzer/expectations.json beside the checkout");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let mut passed = 0;
    let mut by_analyzer: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in cases {
        let mut want: Vec<(String, String)> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["code"].as_str().unwrap().to_string(),
                    e["resource"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        want.sort();
        let outcome = run(case).map(|mut got| {
            got.sort();
            got
        });
        let ok = outcome.as_ref().is_ok_and(|got| *got == want);
        let entry = by_analyzer
            .entry(case["analyzer"].as_str().unwrap_or("").to_string())
            .or_default();
        entry.1 += 1;
        if ok {
            passed += 1;
            entry.0 += 1;
        } else {
            failures.push(format!(
                "case {} {:?} ({}): want {want:?}, got {outcome:?}",
                case["id"], case["name"], case["analyzer"]
            ));
        }
    }
    for (name, (ok, total)) in &by_analyzer {
        println!("{ok:>3}/{total:<3} {name}");
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    println!("{passed} of {} cases pass", cases.len());
    assert!(
        passed >= PASSING,
        "{passed} of {} cases pass, fewer than the {PASSING} that passed before",
        cases.len()
    );
}
