//! Model and adapter folders under MUSCLE_MODEL_DIR.

pub mod catalog;
pub mod resolve;

pub use catalog::{AdapterInfo, Catalog, ModelInfo};
pub use resolve::{FolderKind, Resolver};
