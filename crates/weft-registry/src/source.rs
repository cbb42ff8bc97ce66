//! Config sources: a folder of YAML, loaded and validated as a whole and watched for edits, and
//! the in-memory form tests hand over directly. A folder with an error is refused whole, naming
//! the file, line, object, field and reason, so that the last good config keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use weft_api::Resource;
use weft_api::load::{LoadResult, Severity};
use weft_api::types::mesh::MeshConfig;
use weft_api::validate::check_loaded;

/// A complete, valid configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub resources: Vec<Resource>,
    pub mesh: MeshConfig,
    /// Warnings: not blocking, still worth telling.
    pub warnings: Vec<String>,
}

/// Where config comes from: a folder, and optionally a MeshConfig file. Without the file, the
/// `mesh` key of an `istio` ConfigMap in the folder is used, as istiod reads it.
#[derive(Debug, Clone)]
pub struct Folder {
    pub dir: PathBuf,
    pub mesh_file: Option<PathBuf>,
}

/// One file as last read: its objects and what validation said, kept until the file changes.
#[derive(Debug, Clone, Default)]
struct FileState {
    resources: Vec<Resource>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// Files already read, by path, with the size and modification time they were read at.
#[derive(Debug, Default)]
pub struct FileCache {
    files: std::collections::BTreeMap<PathBuf, ((u64, Option<SystemTime>), FileState)>,
}

fn read_file(path: &Path) -> FileState {
    let mut loaded = LoadResult::default();
    loaded.load_path(path);
    let mut problems = std::mem::take(&mut loaded.problems);
    for obj in &loaded.objects {
        problems.extend(check_loaded(obj, false));
    }
    let (errors, warnings): (Vec<_>, Vec<_>) =
        problems.iter().partition(|p| p.severity == Severity::Error);
    FileState {
        resources: loaded.objects.into_iter().map(|o| o.resource).collect(),
        errors: errors.into_iter().map(ToString::to_string).collect(),
        warnings: warnings.into_iter().map(ToString::to_string).collect(),
    }
}

impl Folder {
    /// Loads and validates everything; `Err` lists every error found.
    pub fn load(&self) -> Result<Config, Vec<String>> {
        self.load_cached(&mut FileCache::default())
    }

    /// `load`, reading again only the files that changed since `cache` last saw them: an edit
    /// of one small file in a folder of thousands of objects is quick to take.
    pub fn load_cached(&self, cache: &mut FileCache) -> Result<Config, Vec<String>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut resources = Vec::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for (path, size, modified) in self.fingerprint() {
            if Some(&path) == self.mesh_file.as_ref() {
                continue;
            }
            let stamp = (size, modified);
            let fresh = match cache.files.get(&path) {
                Some((s, state)) if *s == stamp => state.clone(),
                _ => {
                    let state = read_file(&path);
                    cache.files.insert(path.clone(), (stamp, state.clone()));
                    state
                }
            };
            seen.insert(path);
            resources.extend(fresh.resources);
            errors.extend(fresh.errors);
            warnings.extend(fresh.warnings);
        }
        cache.files.retain(|p, _| seen.contains(p));
        if !errors.is_empty() {
            return Err(errors);
        }
        let mesh = match &self.mesh_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| vec![format!("{}: {e}", file.display())])?;
                MeshConfig::from_yaml(&text)
                    .map_err(|e| vec![format!("{}: MeshConfig: {e}", file.display())])?
            }
            None => mesh_from_config_map(&resources)?,
        };
        Ok(Config {
            resources,
            mesh,
            warnings,
        })
    }

    /// What the folder holds now: every YAML/JSON file with its size and modification time.
    /// Any difference means an edit.
    pub fn fingerprint(&self) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        if let Some(f) = &self.mesh_file {
            walk(f, &mut out);
        }
        out.sort();
        out
    }

    /// Calls `on_change` with the folder's config now and after every edit, checking every
    /// `interval`, until `on_change` returns false.
    pub async fn watch(
        &self,
        interval: Duration,
        mut on_change: impl FnMut(Result<Config, Vec<String>>) -> bool,
    ) {
        let mut cache = FileCache::default();
        let mut seen = self.fingerprint();
        if !on_change(self.load_cached(&mut cache)) {
            return;
        }
        loop {
            tokio::time::sleep(interval).await;
            let now = self.fingerprint();
            if now == seen {
                continue;
            }
            // An editor may write in several steps; wait for the folder to settle.
            tokio::time::sleep(interval / 2).await;
            seen = self.fingerprint();
            if !on_change(self.load_cached(&mut cache)) {
                return;
            }
        }
    }
}

fn walk(path: &Path, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                walk(&e.path(), out);
            }
        }
        return;
    }
    let wanted = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
    if wanted {
        out.push((path.to_path_buf(), meta.len(), meta.modified().ok()));
    }
}

/// The `mesh` key of the `istio` ConfigMap, if the folder has one.
fn mesh_from_config_map(resources: &[Resource]) -> Result<MeshConfig, Vec<String>> {
    for r in resources {
        if let Resource::ConfigMap(cm) = r
            && cm.metadata.name.as_deref() == Some("istio")
            && let Some(text) = cm.data.as_ref().and_then(|d| d.get("mesh"))
        {
            return MeshConfig::from_yaml(text)
                .map_err(|e| vec![format!("ConfigMap {}/istio: data.mesh: {e}", r.namespace())]);
        }
    }
    Ok(MeshConfig::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_object_refuses_the_folder_naming_it_and_a_config_map_sets_the_mesh() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder {
            dir: dir.path().to_path_buf(),
            mesh_file: None,
        };
        std::fs::write(
            dir.path().join("mesh.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: istio, namespace: istio-system }\n\
             data:\n  mesh: |\n    outboundTrafficPolicy: { mode: REGISTRY_ONLY }\n",
        )
        .unwrap();
        let good = folder.load().unwrap();
        assert_eq!(
            good.mesh.resolve().outbound_traffic_policy,
            weft_api::types::sidecar::OutboundTrafficPolicyMode::RegistryOnly
        );
        let before = folder.fingerprint();
        std::fs::write(
            dir.path().join("vs.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: { name: bad, namespace: default }\n\
             spec:\n  hosts: [ web ]\n  http:\n  - timeout: -1s\n    route: [ { destination: { host: web } } ]\n",
        )
        .unwrap();
        assert_ne!(folder.fingerprint(), before);
        let errors = folder.load().unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("vs.yaml:7: VirtualService default/bad: spec.http[0].timeout"),
            "{errors:?}"
        );
    }
}
