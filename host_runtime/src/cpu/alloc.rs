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

/// Asks the kernel to back `buf` with transparent huge pages where it can (Linux; a hint,
/// elsewhere a no-op). A large zeroed buffer such as the KV pool is otherwise faulted in
/// 4 KiB at a time on first touch, inside the first steps that write it.
pub fn advise_huge_pages<T>(buf: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (a, b) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
        if b > a {
            // SAFETY: [a, b) lies inside `buf`, which this call borrows mutably;
            // MADV_HUGEPAGE changes no contents, only how the pages are backed.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}
