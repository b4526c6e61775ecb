//! Keys and values kept across generation calls: an agent's conversation grows by one action and
//! one observation per turn, and without this every turn re-reads the whole conversation. A
//! [`PrefixCache`] holds the keys and values of the tokens a sequence has been fed; the next call
//! feeds only what follows the longest common prefix of the cached tokens and the new prompt.
//!
//! Invariants:
//! - A cache holds exactly `ids.len()` positions, all real (no padding), for positions
//!   `0..ids.len()`, computed by the same weights: a cache is only valid for the model that made it
//!   (the rollout engine keeps caches per episode, within one call, one policy version).
//! - A prompt that diverges from the cached tokens reuses only the common prefix; at least one
//!   token of every prompt is fed, so every row has logits to sample from.
//! - In a batch, row r's keys are laid out `[padding | cached prefix | padding | new tokens]` with
//!   explicit positions and a key-validity mask, so a row's result does not depend on the other
//!   rows (up to floating-point rounding of the batched kernels).

use tch::{Kind, Tensor};

use super::llama::KvCache;

/// One sequence's keys and values for its first `ids.len()` tokens.
pub struct PrefixCache {
    /// The tokens the cache covers.
    pub ids: Vec<i64>,
    /// Per layer `[1, KVH, ids.len(), head_dim]`.
    kv: Vec<(Tensor, Tensor)>,
}

/// A batch's starting state: the cache of the reused prefixes (left-padded to a common length),
/// the validity of its keys, and per row how many prompt tokens it covers.
pub struct Batched {
    /// The assembled cache (empty when nothing is reused).
    pub cache: KvCache,
    /// `[B, C]` validity of the cached keys.
    pub key_valid: Tensor,
    /// Prompt tokens of each row already in `cache`.
    pub reused: Vec<usize>,
}

/// How many tokens of `prompt` `cache` can stand for: their common prefix, leaving at least one
/// token to feed.
fn reusable(cache: &PrefixCache, prompt: &[i64]) -> usize {
    let common = cache.ids.iter().zip(prompt).take_while(|(a, b)| a == b).count();
    common.min(prompt.len().saturating_sub(1))
}

/// Assembles the batch cache for `prompts` from their `caches` (row r's is `caches[r]`; `None` or
/// missing: nothing to reuse).
pub fn assemble(prompts: &[Vec<i64>], caches: &[Option<PrefixCache>], device: tch::Device) -> Batched {
    let cache_of = |r: usize| caches.get(r).and_then(Option::as_ref);
    let reused: Vec<usize> =
        prompts.iter().enumerate().map(|(r, p)| cache_of(r).map_or(0, |c| reusable(c, p))).collect();
    let width = reused.iter().copied().max().unwrap_or(0) as i64;
    let b = prompts.len() as i64;
    let mut valid = vec![false; (b * width) as usize];
    for (r, &n) in reused.iter().enumerate() {
        let row = &mut valid[r * width as usize..(r + 1) * width as usize];
        row[width as usize - n..].iter_mut().for_each(|v| *v = true);
    }
    let key_valid = Tensor::from_slice(&valid).view([b, width]).to(device);
    if width == 0 {
        return Batched { cache: KvCache::default(), key_valid, reused };
    }
    let template = (0..reused.len()).find_map(cache_of).expect("width > 0: some row reuses a cache");
    let layers = (0..template.kv.len())
        .map(|l| {
            let side = |pick: fn(&(Tensor, Tensor)) -> &Tensor| {
                let like = pick(&template.kv[l]);
                let (kvh, hd) = (like.size()[1], like.size()[3]);
                let (kind, dev) = (like.kind(), like.device());
                let rows: Vec<Tensor> = reused
                    .iter()
                    .enumerate()
                    .map(|(r, &n)| {
                        let pad = Tensor::zeros([1, kvh, width - n as i64, hd], (kind, dev));
                        match cache_of(r) {
                            Some(c) if n > 0 => Tensor::cat(&[pad, pick(&c.kv[l]).narrow(2, 0, n as i64)], 2),
                            _ => pad,
                        }
                    })
                    .collect();
                Tensor::cat(&rows, 0)
            };
            Some((side(|kv| &kv.0), side(|kv| &kv.1)))
        })
        .collect();
    Batched { cache: KvCache { layers }, key_valid, reused }
}

/// Row `r`'s prefix cache after a call: its valid keys (`key_valid` `[B, ≥ cache.len()]`), which
/// must be exactly the `ids` it was fed.
pub fn extract(cache: &KvCache, key_valid: &Tensor, r: i64, ids: Vec<i64>) -> PrefixCache {
    let len = cache.len();
    let keep = key_valid.get(r).narrow(0, 0, len).to_kind(Kind::Bool).nonzero().squeeze_dim(1);
    debug_assert_eq!(keep.size()[0], ids.len() as i64, "a cache row holds the tokens it was fed");
    let kv = cache
        .layers
        .iter()
        .map(|l| {
            let (k, v) = l.as_ref().expect("every layer cached");
            (k.get(r).index_select(1, &keep).unsqueeze(0), v.get(r).index_select(1, &keep).unsqueeze(0))
        })
        .collect();
    PrefixCache { ids, kv }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ids: Vec<i64>, layers: usize) -> PrefixCache {
        let n = ids.len() as i64;
        let kv = (0..layers)
            .map(|l| {
                let base = Tensor::arange(n, (Kind::Float, tch::Device::Cpu)).view([1, 1, n, 1]) + l as f64 * 100.0;
                (base.repeat([1, 2, 1, 3]), -base.repeat([1, 2, 1, 3]))
            })
            .collect();
        PrefixCache { ids, kv }
    }

    /// Common prefixes, at least one token left to feed, left padding and validity by hand; a
    /// row's cache survives assemble + extract unchanged.
    #[test]
    fn reuse_is_the_common_prefix_left_padded() {
        let prompts = vec![vec![1, 2, 3, 4, 5], vec![1, 2, 9, 9], vec![7, 8], vec![4, 4, 4]];
        let caches =
            vec![Some(cache(vec![1, 2, 3], 2)), Some(cache(vec![1, 2, 3], 2)), Some(cache(vec![7, 8, 6], 2)), None];
        let b = assemble(&prompts, &caches, tch::Device::Cpu);
        assert_eq!(b.reused, vec![3, 2, 1, 0]);
        assert_eq!(b.cache.len(), 3);
        let valid: Vec<bool> = Vec::try_from(b.key_valid.view([-1])).unwrap();
        #[rustfmt::skip]
        assert_eq!(valid, vec![true, true, true, false, true, true, false, false, true, false, false, false]);
        let k1: Vec<f32> = Vec::try_from(b.cache.layers[1].as_ref().unwrap().0.get(1).get(0).view([-1])).unwrap();
        assert_eq!(k1, vec![0.0, 0.0, 0.0, 100.0, 100.0, 100.0, 101.0, 101.0, 101.0]);
        let back = extract(&b.cache, &b.key_valid, 0, vec![1, 2, 3]);
        for (a, c) in back.kv.iter().zip(&caches[0].as_ref().unwrap().kv) {
            assert!(a.0.equal(&c.0) && a.1.equal(&c.1));
        }
        let none = assemble(&prompts[3..], &caches[3..], tch::Device::Cpu);
        assert_eq!((none.reused, none.cache.len()), (vec![0], 0));
    }
}
