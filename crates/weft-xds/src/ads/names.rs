//! Sets of resource names shared between streams.
//!
//! A sidecar subscribes to the endpoints of every cluster it uses and to its route tables by
//! name, and it does so on every stream. A thousand sidecars of one shape ask for the same
//! thousand names: kept per stream, those sets held ~70 MB in the scale benchmark. Interned,
//! the thousand streams hold one set.

use super::lock;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

/// An interned set of resource names.
pub(crate) type Names = Arc<BTreeSet<String>>;

/// The sets in use; a set lives as long as a stream holds it.
#[derive(Debug, Default)]
pub(crate) struct NameSets {
    inner: Mutex<Interned>,
}

#[derive(Debug, Default)]
struct Interned {
    by_hash: HashMap<u64, Vec<Weak<BTreeSet<String>>>>,
    /// Sweep entries whose sets are gone when the map grows past this.
    sweep_at: usize,
}

impl NameSets {
    /// The shared set equal to `names`.
    pub(crate) fn intern(&self, names: BTreeSet<String>) -> Names {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        names.hash(&mut hasher);
        let hash = hasher.finish();
        let mut inner = lock(&self.inner);
        if inner.by_hash.len() > inner.sweep_at {
            inner.by_hash.retain(|_, sets| {
                sets.retain(|s| s.strong_count() > 0);
                !sets.is_empty()
            });
            inner.sweep_at = (inner.by_hash.len() * 2).max(64);
        }
        let sets = inner.by_hash.entry(hash).or_default();
        sets.retain(|s| s.strong_count() > 0);
        if let Some(shared) = sets.iter().filter_map(Weak::upgrade).find(|s| **s == names) {
            return shared;
        }
        let shared = Arc::new(names);
        sets.push(Arc::downgrade(&shared));
        shared
    }

    /// The shared empty set.
    pub(crate) fn empty(&self) -> Names {
        self.intern(BTreeSet::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn equal_sets_are_shared_and_unused_ones_forgotten() {
        let sets = NameSets::default();
        let a = sets.intern(set(&["x", "y"]));
        let b = sets.intern(set(&["y", "x"]));
        let c = sets.intern(set(&["x"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b, c));
        for i in 0..200 {
            drop(sets.intern(set(&[&i.to_string()])));
        }
        assert!(lock(&sets.inner).by_hash.len() <= 130, "swept");
    }
}
