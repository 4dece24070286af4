//! Loaded models kept in memory, keyed by `ModelSpec`, bounded by a byte budget (LRU eviction).
//!
//! A model with an adapter is its base model (cached under the spec without adapter) plus the
//! adapter applied unmerged, sharing the base's tensors: the base is held once however many of
//! its adapters are in use, and evicting a base evicts the adapters built on it.

use std::sync::Arc;

use super::error::{EngineError, Result};
use super::model::LoadedModel;
use super::types::ModelSpec;

type Loader = Box<dyn FnMut(&ModelSpec) -> Result<LoadedModel> + Send>;

struct Entry {
    spec: ModelSpec,
    /// The cached base model whose tensors this one shares.
    base: Option<ModelSpec>,
    model: Arc<LoadedModel>,
    bytes: u64,
    last_used: u64,
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub loads: u64,
    pub hits: u64,
    pub evictions: u64,
    pub entries: usize,
    pub bytes: u64,
}

pub struct ModelCache {
    budget: u64,
    entries: Vec<Entry>,
    clock: u64,
    stats: CacheStats,
    loader: Loader,
}

impl ModelCache {
    /// A cache using `LoadedModel::load` for base models (with the given fused-kernel choice).
    pub fn new(budget_bytes: u64, fused: bool) -> Self {
        Self::with_loader(budget_bytes, Box::new(move |s| LoadedModel::load(s, fused)))
    }

    pub fn with_loader(budget_bytes: u64, loader: Loader) -> Self {
        Self {
            budget: budget_bytes,
            entries: Vec::new(),
            clock: 0,
            stats: CacheStats::default(),
            loader,
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.len(),
            bytes: self.entries.iter().map(|e| e.bytes).sum(),
            ..self.stats
        }
    }

    /// The model for `spec`, loading it (and evicting least recently used ones) if needed.
    pub fn get(&mut self, spec: &ModelSpec) -> Result<Arc<LoadedModel>> {
        self.clock += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| &e.spec == spec) {
            e.last_used = self.clock;
            self.stats.hits += 1;
            return Ok(e.model.clone());
        }
        if spec.adapter.is_some() {
            let base_spec = ModelSpec {
                adapter: None,
                ..spec.clone()
            };
            let base = self.get(&base_spec)?;
            let model = LoadedModel::with_adapter(&base, spec)?;
            return self.insert(spec, model, Some(base_spec));
        }
        // Refuse from the safetensors headers a model that cannot fit, before reading any weight.
        if let Ok(shapes) = super::weights::model_shapes(&spec.base) {
            let elements: u64 = shapes
                .values()
                .map(|shape| shape.iter().product::<usize>() as u64)
                .sum();
            let needed = elements * spec.dtype.candle().size_in_bytes() as u64;
            if needed > self.budget {
                return Err(EngineError::OverBudget {
                    needed,
                    budget: self.budget,
                });
            }
        }
        let model = (self.loader)(spec)?;
        self.stats.loads += 1;
        self.insert(spec, model, None)
    }

    fn insert(
        &mut self,
        spec: &ModelSpec,
        model: LoadedModel,
        base: Option<ModelSpec>,
    ) -> Result<Arc<LoadedModel>> {
        let bytes = model.bytes();
        if bytes > self.budget {
            return Err(EngineError::OverBudget {
                needed: bytes,
                budget: self.budget,
            });
        }
        while self.entries.iter().map(|e| e.bytes).sum::<u64>() + bytes > self.budget {
            // The base this model shares is in use: never its victim.
            let Some((i, _)) = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| Some(&e.spec) != base.as_ref())
                .min_by_key(|(_, e)| e.last_used)
            else {
                break;
            };
            let e = self.entries.remove(i);
            tracing::info!(base = %e.spec.base.display(), "evicting model from cache");
            self.stats.evictions += 1;
            let before = self.entries.len();
            self.entries.retain(|d| d.base.as_ref() != Some(&e.spec));
            self.stats.evictions += (before - self.entries.len()) as u64;
        }
        let model = Arc::new(model);
        self.entries.push(Entry {
            spec: spec.clone(),
            base,
            model: model.clone(),
            bytes,
            last_used: self.clock,
        });
        Ok(model)
    }
}
