//! How dcoder uses glibc's allocator: freed step buffers stay in the process, and what loading
//! frees goes back to the system once the model is in memory.

/// Keeps freed memory in the process. Every step allocates the same large buffers again
/// (logits, activations); glibc would hand blocks above its mmap threshold back to the kernel
/// and fault them in afresh each time, which measured as a fifth of a block-diffusion step's
/// time on this project's machine. Also keeps candle's elementwise thread pool from spinning
/// beside the matmul threads on small CPUs, unless the user set `CANDLE_NUM_THREADS`.
pub fn tune() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before any other thread
    // exists, as glibc asks.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Hands memory freed while loading back to the system. [`tune`] keeps freed memory for the
/// steps' sake, so without this the tokenizer's JSON and the loader's buffers would stay
/// resident next to the weights for the whole run (docs/benchmarks.md, 8.5).
pub fn return_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of glibc's heaps; it is thread-safe and
    // touches no live allocation.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
