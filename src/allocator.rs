//! glibc's allocator, set for a long-running server with many worker threads. Both are no-ops
//! on other systems.

/// Large blocks (argon2's 19 MiB, upload buffers) always come from mmap and go back to the
/// system when freed, instead of the threshold rising to their size and each worker's arena
/// keeping them (measured: 288 MiB resident after a few sign-ins without this, see the README's
/// Performance section). Call before any other thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Hands freed memory back to the system. The server calls it after its start-up tidy, which
/// holds every attachment reference at once: the allocator kept that memory as the server's
/// idle size (resident memory at start-up on the benchmark's folder of 50,000 attachments:
/// 29.3 MiB before, 18.6 after).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's heaps to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
