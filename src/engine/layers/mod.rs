//! The building blocks every model family is made of: LoRA-capable linear layers, norms, rotary
//! embeddings, attention with its masks and KV cache, and the feed-forward variants.

pub mod attention;
pub mod batched_matmul;
pub mod elementwise;
pub mod kv_cache;
pub mod linear;
pub mod mask;
pub mod matmul_add;
pub mod mlp;
pub mod norm;
pub mod rope;
pub mod vector_math;

pub use attention::{Attention, Qkv};
pub use kv_cache::KvCache;
pub use linear::{LoraPath, Pass, Proj};
pub use mask::{AttnMask, MASKED, continuation_positions_and_mask, positions_and_mask};
pub use mlp::{Activation, Mlp};
pub use norm::Norm;
pub use rope::{Rope, RopeScaling};
