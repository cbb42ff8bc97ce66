//! Config sources: a folder of YAML, loaded, validated and watched for edits, and the in-memory
//! form tests hand over directly. Each object is accepted or refused on its own, as the
//! Kubernetes API server takes `kubectl apply -f DIR`: a refused object names its file, line,
//! object, field and reason, and its last good version (if it had one) keeps serving; the rest
//! of the folder applies. That holds at start as for a live edit.

use crate::references;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use weft_api::Resource;
use weft_api::load::{LoadResult, Loaded, ObjectRef, Problem, Severity};
use weft_api::types::mesh::MeshConfig;
use weft_api::validate::check_loaded;

/// What a folder holds now: the objects that serve, and every problem found.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub resources: Vec<Resource>,
    /// Where each of `resources` is written, in the same order.
    pub origins: Vec<weft_api::load::Origin>,
    pub mesh: MeshConfig,
    /// Each refused an object, a file or the mesh config.
    pub errors: Vec<Problem>,
    /// Not blocking, still worth telling: unknown fields, references to what does not exist.
    pub warnings: Vec<Problem>,
    /// Refused objects whose last good version keeps serving.
    pub kept: Vec<ObjectRef>,
}

/// Where config comes from: a folder, and optionally a MeshConfig file. Without the file, the
/// `mesh` key of an `istio` ConfigMap in the folder is used, as istiod reads it.
#[derive(Debug, Clone)]
pub struct Folder {
    pub dir: PathBuf,
    pub mesh_file: Option<PathBuf>,
}

/// One file as last read: its valid objects and what validation said, kept until the file
/// changes.
#[derive(Debug, Default)]
struct FileState {
    valid: Vec<Loaded>,
    /// Objects validation refused (they keep their last good version).
    refused: Vec<ObjectRef>,
    /// Nothing in the file could be read as objects (unreadable, not YAML): every object it
    /// last gave keeps serving.
    unreadable: bool,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

type Stamp = (u64, Option<SystemTime>);

/// What a watcher remembers between loads: files already read (by path, with the size and
/// modification time they were read at), and the last good version of every object and of the
/// mesh config.
#[derive(Debug, Default)]
pub struct FileCache {
    files: BTreeMap<PathBuf, (Stamp, FileState)>,
    last_good: BTreeMap<ObjectRef, Loaded>,
    mesh: Option<MeshConfig>,
}

fn read_file(path: &Path) -> FileState {
    let mut loaded = LoadResult::default();
    loaded.load_path(path);
    let mut state = FileState::default();
    for p in std::mem::take(&mut loaded.problems) {
        if p.severity == Severity::Error {
            match &p.object {
                Some(o) => state.refused.push(o.clone()),
                None => state.unreadable = true,
            }
        }
        sort(&mut state, p);
    }
    for obj in loaded.objects {
        let problems = check_loaded(&obj, false);
        let refused = problems.iter().any(|p| p.severity == Severity::Error);
        for p in problems {
            sort(&mut state, p);
        }
        if refused {
            state.refused.push(obj.object_ref());
        } else {
            state.valid.push(obj);
        }
    }
    state
}

fn sort(state: &mut FileState, p: Problem) {
    match p.severity {
        Severity::Error => state.errors.push(p),
        Severity::Warning => state.warnings.push(p),
    }
}

impl Folder {
    /// Loads and validates everything once.
    pub fn load(&self) -> Config {
        self.load_cached(&mut FileCache::default())
    }

    /// `load`, reading again only the files that changed since `cache` last saw them (an edit
    /// of one small file in a folder of thousands of objects is quick to take), and keeping
    /// the last good version of what is refused now.
    pub fn load_cached(&self, cache: &mut FileCache) -> Config {
        let mut out = Config::default();
        let mut seen = BTreeSet::new();
        for (path, size, modified) in self.fingerprint() {
            if Some(&path) == self.mesh_file.as_ref() {
                continue;
            }
            let stamp = (size, modified);
            if cache.files.get(&path).is_none_or(|(s, _)| *s != stamp) {
                cache.files.insert(path.clone(), (stamp, read_file(&path)));
            }
            seen.insert(path);
        }
        cache.files.retain(|p, _| seen.contains(p));

        let mut candidates: Vec<&Loaded> = Vec::new();
        let mut refused: Vec<&ObjectRef> = Vec::new();
        let mut unreadable = BTreeSet::new();
        for (path, (_, state)) in &cache.files {
            candidates.extend(&state.valid);
            refused.extend(&state.refused);
            if state.unreadable {
                unreadable.insert(path.display().to_string());
            }
            out.errors.extend(state.errors.iter().cloned());
            out.warnings.extend(state.warnings.iter().cloned());
        }
        // Of two definitions of one object, the one serving now stays and the newcomer is
        // refused, wherever their files sort; at start, the first in file order serves.
        let incumbent = |o: &Loaded| {
            cache
                .last_good
                .get(&o.object_ref())
                .is_some_and(|old| old.origin.file == o.origin.file)
        };
        let mut ranked: Vec<usize> = (0..candidates.len()).collect();
        ranked.sort_by_key(|i| !incumbent(candidates[*i]));
        let in_rank: Vec<&Loaded> = ranked.iter().map(|i| candidates[*i]).collect();
        let duplicates = references::duplicates(&in_rank);
        let dropped: BTreeSet<usize> = duplicates.iter().map(|(i, _)| ranked[*i]).collect();
        out.errors.extend(duplicates.into_iter().map(|(_, p)| p));
        let mut accepted: BTreeMap<ObjectRef, Loaded> = BTreeMap::new();
        let mut order = Vec::new();
        for (i, obj) in candidates.into_iter().enumerate() {
            if !dropped.contains(&i) {
                order.push(obj.object_ref());
                accepted.insert(obj.object_ref(), obj.clone());
            }
        }
        let keep = refused.into_iter().cloned().chain(
            cache
                .last_good
                .iter()
                .filter(|(_, obj)| unreadable.contains(&obj.origin.file))
                .map(|(id, _)| id.clone()),
        );
        for id in keep.collect::<BTreeSet<_>>() {
            if accepted.contains_key(&id) {
                continue;
            }
            if let Some(old) = cache.last_good.get(&id) {
                order.push(id.clone());
                accepted.insert(id.clone(), old.clone());
                out.kept.push(id);
            }
        }

        out.mesh = match self.mesh(&accepted) {
            Ok(mesh) => {
                cache.mesh = Some(mesh.clone());
                mesh
            }
            Err(p) => {
                out.errors.push(*p);
                cache.mesh.clone().unwrap_or_default()
            }
        };
        let loaded: Vec<&Loaded> = order.iter().filter_map(|id| accepted.get(id)).collect();
        out.resources = loaded.iter().map(|o| o.resource.clone()).collect();
        out.origins = loaded.iter().map(|o| o.origin.clone()).collect();
        out.warnings.extend(references::missing(&loaded));
        let found = crate::analysis::live_problems(&loaded, &out.mesh);
        out.warnings.extend(found);
        cache.last_good = accepted;
        for list in [&mut out.errors, &mut out.warnings] {
            list.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        }
        out
    }

    /// The mesh config: the file given, else the `istio` ConfigMap's `mesh` key.
    fn mesh(&self, objects: &BTreeMap<ObjectRef, Loaded>) -> Result<MeshConfig, Box<Problem>> {
        let problem = |file: String, line: u32, object, message| {
            Box::new(Problem {
                severity: Severity::Error,
                file,
                line,
                document: 1,
                object,
                path: None,
                message: format!("{message}; the last good mesh config keeps serving"),
            })
        };
        if let Some(file) = &self.mesh_file {
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(file)
                .map_err(|e| problem(shown.clone(), 0, None, format!("cannot read: {e}")))?;
            return MeshConfig::from_yaml(&text)
                .map_err(|e| problem(shown, 1, None, format!("MeshConfig: {e}")));
        }
        for obj in objects.values() {
            if let Resource::ConfigMap(cm) = &obj.resource
                && cm.metadata.name.as_deref() == Some("istio")
                && let Some(text) = cm.data.as_ref().and_then(|d| d.get("mesh"))
            {
                let at = weft_api::FieldPath::root().key("data").key("mesh");
                return MeshConfig::from_yaml(text).map_err(|e| {
                    Box::new(obj.problem(Severity::Error, at, format!("MeshConfig: {e}")))
                });
            }
        }
        Ok(MeshConfig::default())
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
    pub async fn watch(&self, interval: Duration, mut on_change: impl FnMut(Config) -> bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
        metadata: { name: web, namespace: default }\n\
        spec:\n  hosts: [ web ]\n  http:\n  - timeout: TIMEOUT\n    route: [ { destination: { host: web } } ]\n";

    fn timeout(r: &[Resource]) -> Option<String> {
        r.iter().find_map(|r| match r {
            Resource::VirtualService(vs) => {
                vs.spec.http[0].timeout.as_ref().map(|t| format!("{t:?}"))
            }
            _ => None,
        })
    }

    #[test]
    fn a_bad_object_is_refused_alone_and_its_last_good_version_keeps_serving() {
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
        let svc = "apiVersion: v1\nkind: Service\nmetadata: { name: web, namespace: default }\n\
                   spec: { ports: [ { port: 80, name: http } ] }\n";
        std::fs::write(dir.path().join("svc.yaml"), svc).unwrap();
        // At start, with nothing to fall back on: the bad object is refused, the rest serves.
        std::fs::write(dir.path().join("vs.yaml"), VS.replace("TIMEOUT", "-1s")).unwrap();
        let mut cache = FileCache::default();
        let start = folder.load_cached(&mut cache);
        assert_eq!(start.errors.len(), 1, "{:?}", start.errors);
        assert!(
            start.errors[0]
                .to_string()
                .contains("vs.yaml:7: VirtualService default/web: spec.http[0].timeout"),
            "{}",
            start.errors[0]
        );
        assert!(start.kept.is_empty());
        assert_eq!(
            start.resources.len(),
            2,
            "the ConfigMap and the Service serve"
        );
        assert_eq!(
            start.mesh.resolve().outbound_traffic_policy,
            weft_api::types::sidecar::OutboundTrafficPolicyMode::RegistryOnly
        );
        // Fixed: it serves. Broken again: its last good version keeps serving.
        std::fs::write(dir.path().join("vs.yaml"), VS.replace("TIMEOUT", "5s")).unwrap();
        let good = folder.load_cached(&mut cache);
        assert!(good.errors.is_empty(), "{:?}", good.errors);
        let served = timeout(&good.resources).unwrap();
        std::fs::write(dir.path().join("vs.yaml"), VS.replace("TIMEOUT", "-2s ")).unwrap();
        let bad = folder.load_cached(&mut cache);
        assert_eq!(bad.errors.len(), 1);
        assert_eq!(bad.kept.len(), 1);
        assert_eq!(timeout(&bad.resources), Some(served.clone()));
        // A file that is no longer YAML keeps every object it gave.
        std::fs::write(dir.path().join("vs.yaml"), "spec: [ unclosed\n").unwrap();
        let broken = folder.load_cached(&mut cache);
        assert!(
            broken.errors[0].to_string().contains("invalid YAML"),
            "{:?}",
            broken.errors
        );
        assert_eq!(timeout(&broken.resources), Some(served));
        // Removed: gone.
        std::fs::remove_file(dir.path().join("vs.yaml")).unwrap();
        let removed = folder.load_cached(&mut cache);
        assert_eq!(timeout(&removed.resources), None);
        assert!(removed.errors.is_empty());
    }

    #[test]
    fn duplicates_and_missing_references_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder {
            dir: dir.path().to_path_buf(),
            mesh_file: None,
        };
        std::fs::write(dir.path().join("a.yaml"), VS.replace("TIMEOUT", "1s")).unwrap();
        let other = VS
            .replace("TIMEOUT", "2s")
            .replace("host: web }", "host: web, subset: v9 }");
        std::fs::write(
            dir.path().join("b.yaml"),
            format!("# the same name\n{other}"),
        )
        .unwrap();
        let c = folder.load();
        let shown: Vec<String> = c.errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(
            shown[0].contains("b.yaml:4: VirtualService default/web: metadata.name: duplicate: VirtualService default/web is already defined at"),
            "{shown:?}"
        );
        assert!(shown[0].contains("a.yaml:3"), "{shown:?}");
        let served_subsets: Vec<Option<String>> = c
            .resources
            .iter()
            .filter_map(|r| match r {
                Resource::VirtualService(vs) => Some(
                    vs.spec.http[0].route.as_ref()?[0]
                        .destination
                        .as_ref()?
                        .subset
                        .clone(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(
            served_subsets,
            vec![None],
            "the first definition (a.yaml) serves"
        );
        let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert!(
            warnings.iter().any(|w| w.contains(
                "a.yaml:8: warning: VirtualService default/web: spec.http[0].route[0].destination.host: Referenced host not found: \"web\""
            )),
            "{warnings:?}"
        );
    }
}
