//! A hash map from 64-bit hashes split into 256 shards by the key's top byte. A table that
//! doubles needs its old and new copies at once, and the freed old copy stays in the process's
//! heap; one table of a million entries therefore costs about twice its size in resident memory.
//! Shards grow one at a time, each by 1/256 of the whole, and the block a shard frees is the
//! size the next shard to grow asks for, so resident memory stays near the entries' own size.
//! Invariant: a key's shard is the top byte of the key times a 64-bit odd constant (Fibonacci
//! hashing), so keys that differ only in low bits spread over the shards.

use std::collections::HashMap;

const SHARDS: usize = 256;

/// See the module docs.
pub(crate) struct ShardedMap<V> {
    shards: Vec<HashMap<u64, V>>,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        ShardedMap { shards: (0..SHARDS).map(|_| HashMap::new()).collect() }
    }
}

impl<V> ShardedMap<V> {
    /// A map with room for about `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        let each = n.div_ceil(SHARDS) + n.div_ceil(SHARDS) / 8;
        ShardedMap { shards: (0..SHARDS).map(|_| HashMap::with_capacity(each)).collect() }
    }

    fn shard(&self, k: u64) -> usize {
        (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
    }

    /// The value of `k`.
    pub fn get(&self, k: &u64) -> Option<&V> {
        self.shards[self.shard(*k)].get(k)
    }

    /// Whether `k` has a value.
    pub fn contains_key(&self, k: &u64) -> bool {
        self.get(k).is_some()
    }

    /// Sets the value of `k`, returning the previous one.
    pub fn insert(&mut self, k: u64, v: V) -> Option<V> {
        let s = self.shard(k);
        self.shards[s].insert(k, v)
    }

    /// Removes `k`, returning its value.
    pub fn remove(&mut self, k: &u64) -> Option<V> {
        let s = self.shard(*k);
        self.shards[s].remove(k)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Entries the shards hold room for.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).sum()
    }

    /// Every entry, shard by shard.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_one_map() {
        let mut m = ShardedMap::default();
        let mut plain = HashMap::new();
        let mut rng = crate::synth::SplitMix::new(7);
        for i in 0..5000u64 {
            let k = (rng.next_u64() % 3000).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if i % 3 == 0 {
                assert_eq!(m.remove(&k), plain.remove(&k));
            } else {
                assert_eq!(m.insert(k, i), plain.insert(k, i));
            }
        }
        assert_eq!(m.len(), plain.len());
        let mut got: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
        let mut want: Vec<_> = plain.into_iter().collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
