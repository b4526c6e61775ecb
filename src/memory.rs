//! How the process keeps freed heap memory. glibc's malloc serves every block over 32 MB with a
//! fresh `mmap` and unmaps it on `free`, so a training step that allocates and frees the same
//! [tokens, vocab] logits, log-softmax and gradient buffers each step (400 MB each for 8 × 256
//! tokens of a 49,152-token vocabulary) pays the kernel to fault in and zero every page again:
//! a fifth of the small model's step time went to page faults. libtorch's CPU allocator and
//! arrow's buffers both allocate through this malloc.
//!
//! [`retain_freed_memory`] turns that off for the process: every block comes from the heap and
//! freed memory stays there for reuse (the CPU analogue of PyTorch's CUDA caching allocator).
//! With `one_arena`, all threads share one heap: MKL's threads allocate their own packing buffers,
//! and in per-thread arenas each kept its own pool of freed blocks (small model: peak 2.9 GB with
//! per-thread arenas, 2.1 GB with one; fragmentation varies, 2.1–3.6 GB over this VM's runs). The
//! libtorch build asks for it; the torch-free build, whose timely workers allocate concurrently
//! and hold no large buffers for long, does not.
//! Invariants: it runs once, before the first allocation worth keeping, and never when the user
//! configured malloc through the environment (`MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_`,
//! `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TOP_PAD_`, `MALLOC_ARENA_MAX` or a `glibc.malloc` tunable):
//! setting `MALLOC_MMAP_MAX_=65536` restores glibc's default. Cost: resident memory stays at the
//! process's peak after a phase ends, and heap fragmentation can raise that peak (measured in
//! `benches/results/model.md`). Only on glibc; elsewhere it does nothing.

/// Keeps freed memory in the heap for reuse instead of returning it to the kernel (in a single
/// arena with `one_arena`), unless the environment configures malloc itself. Returns whether it
/// changed anything.
pub fn retain_freed_memory(one_arena: bool) -> bool {
    !malloc_configured(|v| std::env::var(v).ok()) && tune(one_arena)
}

/// Whether the environment (`var` looks a variable up) configures malloc itself.
fn malloc_configured(var: impl Fn(&str) -> Option<String>) -> bool {
    ["MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX"]
        .iter()
        .any(|v| var(v).is_some())
        || var("GLIBC_TUNABLES").is_some_and(|t| t.contains("glibc.malloc."))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune(one_arena: bool) -> bool {
    // SAFETY: mallopt only sets malloc parameters; glibc takes its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
            && (!one_arena || libc::mallopt(libc::M_ARENA_MAX, 1) == 1)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune(_one_arena: bool) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_malloc_settings_win() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |v: &str| set.iter().find(|(k, _)| *k == v).map(|(_, x)| x.to_string())
        };
        assert!(!malloc_configured(env(&[("PATH", "/bin"), ("GLIBC_TUNABLES", "glibc.rtld.nns=2")])));
        assert!(malloc_configured(env(&[("MALLOC_MMAP_MAX_", "65536")])));
        assert!(malloc_configured(env(&[("MALLOC_ARENA_MAX", "4")])));
        assert!(malloc_configured(env(&[("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")])));
    }

    /// After tuning, a 48 MB block (glibc `mmap`s anything over 32 MB) comes from the heap. (In a
    /// thread's own arena, blocks over 64 MB are still mapped: the libtorch build's single arena
    /// is what keeps those on the heap.)
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_blocks_come_from_the_heap() {
        assert!(tune(false));
        let before = unsafe { libc::mallinfo2() }.hblks;
        let block = vec![1u8; 48 << 20];
        let during = unsafe { libc::mallinfo2() }.hblks;
        assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), 48 << 20);
        assert_eq!(during, before, "the 48 MB block was mmapped");
    }
}
