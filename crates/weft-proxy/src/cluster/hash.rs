//! Consistent hashing as Envoy builds it, so that the same request key reaches the same host
//! through Weft as through Envoy: RING_HASH (ketama ring of xxHash64 points, `address_i` keys)
//! and MAGLEV (the lookup table of the Maglev paper, filled in the order of sorted host keys).

use super::Host;
use std::sync::Arc;
use xxhash_rust::xxh64::xxh64;

/// Envoy's defaults.
pub const DEFAULT_MIN_RING: u64 = 1024;
pub const DEFAULT_MAX_RING: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAGLEV_TABLE: u64 = 65537;

/// xxHash64 with seed 0: what Envoy hashes request keys and host keys with.
pub fn hash(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// Envoy's way of folding several hash policies into one key: rotate what is there, xor the new.
pub fn combine(acc: Option<u64>, next: u64) -> u64 {
    match acc {
        Some(h) => h.rotate_left(1) ^ next,
        None => next,
    }
}

#[derive(Debug)]
pub enum Table {
    /// (point, host index), sorted by point.
    Ring(Vec<(u64, usize)>),
    /// Slot → host index.
    Maglev(Vec<usize>),
}

/// `members` are indices into `hosts`; weights are normalised over them, as Envoy does per
/// priority level.
fn normalized(hosts: &[Arc<Host>], members: &[usize]) -> Vec<(usize, f64)> {
    let total: f64 = members.iter().map(|&i| f64::from(hosts[i].weight)).sum();
    if total == 0.0 {
        return Vec::new();
    }
    members
        .iter()
        .map(|&i| (i, f64::from(hosts[i].weight) / total))
        .collect()
}

pub fn ring(hosts: &[Arc<Host>], members: &[usize], min_size: u64, max_size: u64) -> Table {
    let weights = normalized(hosts, members);
    let Some(min_weight) = weights
        .iter()
        .map(|(_, w)| *w)
        .min_by(|a, b| a.total_cmp(b))
    else {
        return Table::Ring(Vec::new());
    };
    // Enough points that the lightest host gets a whole number of them, within the maximum.
    let scale = ((min_weight * min_size as f64).ceil() / min_weight).min(max_size as f64);
    let mut ring = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0f64, 0.0f64);
    for (index, weight) in weights {
        let prefix = format!("{}_", hosts[index].address);
        target += scale * weight;
        let mut i = 0u64;
        while current < target {
            ring.push((hash(format!("{prefix}{i}").as_bytes()), index));
            i += 1;
            current += 1.0;
        }
    }
    ring.sort_by_key(|(point, _)| *point);
    Table::Ring(ring)
}

pub fn maglev(hosts: &[Arc<Host>], members: &[usize], table_size: u64) -> Table {
    let weights = normalized(hosts, members);
    if weights.is_empty() || table_size < 2 {
        return Table::Maglev(Vec::new());
    }
    let max_weight = weights.iter().map(|(_, w)| *w).fold(0.0, f64::max);
    let mut entries: Vec<(String, usize, f64)> = weights
        .into_iter()
        .map(|(i, w)| (hosts[i].address.to_string(), i, w))
        .collect();
    // Filled in a stable order, so that every proxy builds the same table.
    entries.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.total_cmp(&b.2)));
    struct Build {
        index: usize,
        offset: u64,
        skip: u64,
        weight: f64,
        target: f64,
        next: u64,
    }
    let mut build: Vec<Build> = entries
        .iter()
        .map(|(key, index, weight)| Build {
            index: *index,
            offset: hash(key.as_bytes()) % table_size,
            skip: xxh64(key.as_bytes(), 1) % (table_size - 1) + 1,
            weight: *weight,
            target: 0.0,
            next: 0,
        })
        .collect();
    let size = table_size as usize;
    let mut table: Vec<Option<usize>> = vec![None; size];
    let mut filled = 0usize;
    let mut iteration = 1u64;
    while filled < size {
        for e in &mut build {
            if filled >= size {
                break;
            }
            // A host of the largest weight takes a slot every round; one of a third of it,
            // every third round.
            if (iteration as f64) * e.weight < e.target {
                continue;
            }
            e.target += max_weight;
            let mut slot = ((e.offset + e.skip * e.next) % table_size) as usize;
            while table[slot].is_some() {
                e.next += 1;
                slot = ((e.offset + e.skip * e.next) % table_size) as usize;
            }
            table[slot] = Some(e.index);
            e.next += 1;
            filled += 1;
        }
        iteration += 1;
    }
    Table::Maglev(table.into_iter().flatten().collect())
}

impl Table {
    /// The host index for a request hash.
    pub fn choose(&self, h: u64) -> Option<usize> {
        match self {
            Table::Ring(ring) => {
                if ring.is_empty() {
                    return None;
                }
                // The first point at or after the hash, wrapping around.
                let at = ring.partition_point(|(point, _)| *point < h);
                Some(ring.get(at).unwrap_or(&ring[0]).1)
            }
            Table::Maglev(table) => {
                if table.is_empty() {
                    return None;
                }
                Some(table[(h % table.len() as u64) as usize])
            }
        }
    }
}
