//! The threads that run tensor work on CPU.
//!
//! candle's matrix multiplies (the gemm crate) split across rayon's threads, its element-wise
//! ops across candle's own barrier pool. Called from a thread outside rayon, every multiply was
//! handed to rayon's threads while the caller slept, and woken again after. Each engine command
//! runs instead on a thread of one rayon pool sized to candle's thread count, which takes part
//! in every multiply itself. With candle's barrier spin shortened (`process::configure`) an MC
//! run on the SmolLM2-135M shape took 22% less time; the pool alone gained nothing, the short
//! spin alone about 6%.

use std::sync::OnceLock;

/// Runs `f` on a thread of the compute pool (or in place, when the pool cannot be built).
pub fn run_on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| build_pool("muscle-compute").ok());
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Runs `f` on a pool of its own, sized like the compute pool, whose first thread runs `f`: for
/// long work (a training run) that would otherwise hold a compute-pool thread, and every engine
/// command queued behind it, for its whole length. A training's step took 20% less time this way
/// than from a blocking thread outside rayon (SmolLM2-135M shape, 2 cores).
pub fn run_on_own_pool<R: Send>(name: &str, f: impl FnOnce() -> R + Send) -> R {
    match build_pool(name) {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// A pool of candle's thread count, its threads named `name-N`.
fn build_pool(name: &str) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    let name = name.to_string();
    rayon::ThreadPoolBuilder::new()
        .num_threads(candle_core::utils::get_num_threads())
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
}
