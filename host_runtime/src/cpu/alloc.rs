//! Heap policy for the CPU forward pass. Each step allocates activation buffers of
//! megabytes (`[tokens, hidden]`, `[tokens, intermediate]`) and frees them a moment later.
//! glibc serves blocks that large with a fresh `mmap` and returns them with `munmap`, so
//! every step pays a page fault and a page clear per 4 KiB (about a fifth of a 2048-token
//! prefill on a 2-core machine). Raising the mmap and trim thresholds keeps them in the
//! heap, where they are reused; the heap then stays at its high-water mark.

/// Keeps large allocations in the heap (glibc only; elsewhere a no-op). Idempotent.
pub fn keep_large_allocations_in_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator tuning parameters; it is thread-safe
            // and takes plain integers.
            unsafe {
                // 32 MiB is the largest threshold glibc accepts on 64-bit targets.
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        });
    }
}
