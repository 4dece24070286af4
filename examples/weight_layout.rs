//! The forward product `x Wᵀ` of a linear layer with its weight as stored (`W`, `[out, in]`,
//! read through a transposed view) and transposed once (`Wᵀ`, `[in, out]`), through candle's
//! matmul on 2 threads, on SmolLM2-135M's layer and head shapes (BENCHMARKS.md, "Weights laid
//! out for the forward"). `cargo run --release --example weight_layout`
use std::time::Instant;

use candle_core::{Device, Tensor};

const SHAPES: [(usize, usize, usize); 12] = [
    (480, 576, 576),
    (480, 576, 192),
    (480, 576, 1536),
    (480, 1536, 576),
    (1600, 576, 1536),
    (1600, 1536, 576),
    (64, 576, 1536),
    (32, 576, 576),
    (8, 576, 49152),
    (32, 576, 49152),
    (128, 576, 49152),
    (400, 576, 49152),
];

fn main() -> candle_core::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .map_err(candle_core::Error::wrap)?;
    pool.install(|| {
        println!("| rows | in | out | W as stored, GFLOP/s | Wᵀ, GFLOP/s | Wᵀ / W |");
        println!("|---|---|---|---|---|---|");
        for (m, k, n) in SHAPES {
            let x = Tensor::randn(0f32, 1., (m, k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1., (n, k), &Device::Cpu)?;
            let operands = [w.t()?, w.t()?.contiguous()?];
            let flops = 2.0 * (m * n * k) as f64;
            let reps = (2e10 / flops) as usize + 3;
            let mut best = [f64::MAX; 2];
            // Round 0 warms up; the two layouts alternate within each round.
            for round in 0..6 {
                for (i, rhs) in operands.iter().enumerate() {
                    let t = Instant::now();
                    for _ in 0..reps {
                        x.matmul(rhs)?;
                    }
                    let s = t.elapsed().as_secs_f64() / reps as f64;
                    if round > 0 {
                        best[i] = best[i].min(s);
                    }
                }
            }
            let gflops = |s: f64| flops / s / 1e9;
            println!(
                "| {m} | {k} | {n} | {:.1} | {:.1} | {:.2}x |",
                gflops(best[0]),
                gflops(best[1]),
                best[0] / best[1]
            );
        }
        Ok(())
    })
}
