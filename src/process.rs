//! Settings of the whole process, made first thing in `main`, before any thread starts.

/// Applies every setting below; call before any thread is spawned.
pub fn configure() {
    limit_allocator_arenas();
    reuse_freed_activations();
    short_barrier_spin();
    count_threads_once();
}

/// glibc gives each thread that allocates its own arena (up to 8 per core) and keeps freed
/// blocks in them. The engine frees activation buffers of every size on several threads (the
/// compute pool, candle's barrier pool, tokio's workers), so freed memory piled up in many
/// arenas. Two arenas for the whole process took an evaluation's peak RSS from 1.30x to 1.28x
/// the weights it holds (BENCHMARKS.md, "Real shapes"). With two, which arena a thread took
/// depended on timing, and a compatibility training's peak moved between runs (957-1015 MiB,
/// once 1197 MiB, against a 1026 MiB bar); with one it was 953-958 MiB in every run, at the same
/// speed. A value set in the environment (`MALLOC_ARENA_MAX`) is kept.
fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    allocator_default("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1);
}

/// glibc maps a block above its mmap threshold (128 KiB at first, raised up to 32 MiB by the
/// sizes freed) straight from the kernel and unmaps it when freed, and hands the top of a heap
/// back beyond its trim threshold. A forward pass allocates and frees activations of 1-30 MB
/// at every layer, so each was mapped, faulted in page by page and unmapped again: on few-shot
/// scoring (prompts of 150-300 tokens) the system time was 5-15 s of a 40 s run. Blocks up to
/// 32 MiB from the heap, and up to 256 MiB of free heap kept for the next pass, took it to
/// 1.6-2.0 s and the run to 31-36 s, at the same peak RSS; a training run's peak stayed within
/// 923-945 MiB (BENCHMARKS.md, "Freed activations kept for reuse"). Values set in the
/// environment (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) are kept.
fn reuse_freed_activations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        allocator_default("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20);
        allocator_default("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Sets glibc's allocator parameter `param` to `value`, unless the environment sets it through
/// `var` (which glibc reads itself).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn allocator_default(var: &str, param: libc::c_int, value: libc::c_int) {
    if std::env::var_os(var).is_none() {
        // SAFETY: mallopt only changes glibc's allocator parameters; no other thread exists yet.
        unsafe {
            libc::mallopt(param, value);
        }
    }
}

/// candle's element-wise ops split across its barrier pool, whose threads spin 25,000 rounds
/// for the next op before they sleep. Between ops they spun against the matrix multiplies'
/// threads for the same cores: 18% of an MC run's samples. A short spin (candle reads this
/// variable when the pool starts) made the run 22% faster with the compute pool
/// (`engine::threads`). A value set in the environment is kept.
fn short_barrier_spin() {
    env_default("CANDLE_BARRIER_POOL_SPIN_LIMIT", || "100".into());
}

/// candle asks for its thread count at every matrix multiply (and so do the engine's own
/// products); without `RAYON_NUM_THREADS` set, each answer counted the physical cores by reading
/// and parsing /proc/cpuinfo: 24,000 reads in a 17-second multiple-choice run, whose system time
/// fell from 3.8-4.3 to 2.7-3.1 s without them. Counted once here and written to the variable
/// candle reads first, the count is the same and costs an environment lookup. A value set in the
/// environment is kept.
fn count_threads_once() {
    env_default("RAYON_NUM_THREADS", || {
        candle_core::utils::get_num_threads().to_string()
    });
}

/// Sets the environment variable `var` to `value()`, unless the environment already sets it.
fn env_default(var: &str, value: impl FnOnce() -> String) {
    if std::env::var_os(var).is_none() {
        let value = value();
        // SAFETY: `configure` runs before any other thread exists, so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var(var, value) };
    }
}
