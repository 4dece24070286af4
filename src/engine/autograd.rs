//! Backward passes written by hand, for values computed without a gradient graph.
//!
//! candle keeps every intermediate of a forward pass until the loss is dropped, and its backward
//! also stores a gradient for every operand that needs none (a frozen weight, a mask, a rotary
//! table), which it never frees. Training a LoRA on a real shape that way holds ~150 tensors per
//! layer. `attach_backward` keeps one input and one output instead, and `checkpoint` recomputes
//! a whole block inside the backward (activation checkpointing).

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor, Var};

type Backward = dyn Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor> + Send + Sync;

/// `y`, a function of `x` computed without a graph, as a graph node whose backward gives `x`
/// the gradient `backward(x, y, dy)`. The graph keeps `x` and the result, nothing of `y`'s own
/// computation. Without a graph on `x` this is `y` itself.
pub fn attach_backward<B>(x: &Tensor, y: Tensor, backward: B) -> candle_core::Result<Tensor>
where
    B: Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    if !x.track_op() {
        return Ok(y);
    }
    let y = y.detach();
    let whole = y.layout().is_contiguous() && y.layout().start_offset() == 0;
    let y = if whole { y } else { y.copy()? };
    x.apply_op1(Attached {
        value: Mutex::new(Some(y)),
        backward: Box::new(backward),
    })
}

/// The op behind `attach_backward`: its forward hands over the value (taken, so the op does not
/// keep a second copy of it alive); its backward is the given function.
struct Attached {
    value: Mutex<Option<Tensor>>,
    backward: Box<Backward>,
}

fn locked<T>(m: &Mutex<T>) -> candle_core::Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg("autograd lock poisoned".into()))
}

impl Attached {
    fn take(&self) -> candle_core::Result<Tensor> {
        locked(&self.value)?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("attached value already taken".into()))
    }
}

impl CustomOp1 for Attached {
    fn name(&self) -> &'static str {
        "attached-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = self.take()?;
        let (storage, layout) = y.storage_and_layout();
        match &*storage {
            // Contiguous from offset 0: `try_clone` copies the storage, which starts with the value.
            Storage::Cpu(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("attached-backward: the value is not on the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let y = self.take()?;
        let (storage, layout) = y.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("attached-backward: the value is not on the GPU"),
        }
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some((self.backward)(x, res, grad)?))
    }
}

/// Gradients of trainable variables computed inside recomputed backward passes, which the outer
/// backward cannot see: merge them into its store with `drain_into`.
#[derive(Debug, Default)]
pub struct GradSink(Mutex<Vec<(Tensor, Tensor)>>);

impl GradSink {
    fn push(&self, var: &Tensor, grad: Tensor) -> candle_core::Result<()> {
        locked(&self.0)?.push((var.clone(), grad));
        Ok(())
    }

    /// Adds every collected gradient to `grads` and empties the sink.
    pub fn drain_into(&self, grads: &mut GradStore) -> candle_core::Result<()> {
        let collected = std::mem::take(&mut *locked(&self.0)?);
        for (var, grad) in collected {
            let sum = match grads.remove(&var) {
                Some(previous) => (previous + grad)?,
                None => grad,
            };
            grads.insert(&var, sum);
        }
        Ok(())
    }

    /// Drops whatever was collected (a pass whose backward never ran to the end).
    pub fn clear(&self) {
        if let Ok(mut v) = self.0.lock() {
            v.clear();
        }
    }
}

/// `f(x)` where the graph keeps only `x` and the result: the backward runs `f` again with a graph
/// on a copy of `x`, gives `x` its gradient and pushes the gradients of `vars` (the trainable
/// variables `f` reads) to `sink`. `f` must compute the same function both times (dropout
/// drawn from a seed, not from a running generator).
pub fn checkpoint<F>(
    x: &Tensor,
    vars: Vec<Tensor>,
    sink: Arc<GradSink>,
    f: F,
) -> candle_core::Result<Tensor>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    let x = tracked(x)?;
    let y = f(&x.detach())?;
    attach_backward(&x, y, move |x, _, dy| {
        let (input, grads) = backward_of(x, dy, &f)?;
        for var in &vars {
            if let Some(g) = grads.get(var) {
                sink.push(var, g.clone())?;
            }
        }
        input_grad(&input, &grads)
    })
}

/// `record(x)`'s value `y`, computed without a graph, as a graph node whose backward is a
/// hand-written one: `backward(tape, x, dy)` returns `x`'s gradient and (variable, gradient)
/// pairs, which go to `sink`. `tape` is what `record` kept for it (`None`: the backward
/// recomputes what it needs); the backward gets it once.
pub fn with_backward<T, R, B, E>(
    x: &Tensor,
    sink: Arc<GradSink>,
    record: R,
    backward: B,
) -> candle_core::Result<Tensor>
where
    T: Send + 'static,
    R: FnOnce(&Tensor) -> Result<(Option<T>, Tensor), E>,
    B: Fn(Option<T>, &Tensor, &Tensor) -> Result<(Tensor, Vec<(Tensor, Tensor)>), E>
        + Send
        + Sync
        + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let x = tracked(x)?;
    let (tape, y) = record(&x.detach()).map_err(candle_core::Error::wrap)?;
    let tape = Mutex::new(tape);
    attach_backward(&x, y, move |x, _, dy| {
        let tape = locked(&tape)?.take();
        let (dx, grads) =
            backward(tape, &x.detach(), &dy.detach()).map_err(candle_core::Error::wrap)?;
        for (var, grad) in grads {
            sink.push(&var, grad)?;
        }
        Ok(dx)
    })
}

/// `x`, or where it has no graph (the first block's input: the embeddings of frozen weights) a
/// variable standing in for it, so a checkpointed block still gets a backward.
fn tracked(x: &Tensor) -> candle_core::Result<Tensor> {
    Ok(if x.track_op() {
        x.clone()
    } else {
        Var::from_tensor(x)?.into_inner()
    })
}

/// The gradient `f`'s own ops give `x` for the output gradient `dy` (candle's backward on a
/// copy of `x`): the backward of a fused kernel, from the plain ops it stands for.
pub fn local_grad<F>(x: &Tensor, dy: &Tensor, f: F) -> candle_core::Result<Tensor>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let (input, grads) = backward_of(x, dy, &f)?;
    input_grad(&input, &grads)
}

/// Runs `f` with a graph on a copy of `x` and back-propagates `dy` through it.
fn backward_of<F>(x: &Tensor, dy: &Tensor, f: &F) -> candle_core::Result<(Var, GradStore)>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let input = Var::from_tensor(&x.detach())?;
    let y = f(input.as_tensor())?;
    let grads = (y * dy.detach())?.sum_all()?.backward()?;
    Ok((input, grads))
}

fn input_grad(input: &Var, grads: &GradStore) -> candle_core::Result<Tensor> {
    match grads.get(input.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => input.as_tensor().zeros_like(),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (u, v) in a.iter().zip(b) {
            assert!((u - v).abs() < 1e-5 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }

    /// A checkpointed function gives its input and its variables the gradients candle's own
    /// backward gives them, and the same value.
    #[test]
    fn checkpoint_matches_plain_backward() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 4), &dev).unwrap()).unwrap();
        let frozen = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let x0 = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap()).unwrap();
        let weights = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
        let f = {
            let (w, frozen) = (w.as_tensor().clone(), frozen.clone());
            move |x: &Tensor| -> candle_core::Result<Tensor> {
                x.matmul(&w)?.tanh()?.broadcast_mul(&frozen)?.exp()
            }
        };
        // The input is an intermediate (x0 * 2), as a block's input is.
        let x = (x0.as_tensor() * 2.0).unwrap();
        let plain_y = f(&x).unwrap();
        let plain = (&plain_y * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let sink = Arc::new(GradSink::default());
        let y = checkpoint(&x, vec![w.as_tensor().clone()], sink.clone(), f).unwrap();
        close(&values(&y), &values(&plain_y));
        let mut grads = (&y * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(w.as_tensor()).is_none());
        sink.drain_into(&mut grads).unwrap();
        for t in [x0.as_tensor(), w.as_tensor()] {
            close(
                &values(grads.get(t).unwrap()),
                &values(plain.get(t).unwrap()),
            );
        }
        // What the graph holds: the op's input and result, not the function's intermediates.
        assert_eq!(y.sorted_nodes().len(), 3);
    }

    /// Without a graph on the input, the checkpointed function still trains its variables.
    #[test]
    fn checkpoint_of_an_input_without_graph_trains_the_variables() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 2), &dev).unwrap()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
        let f = {
            let w = w.as_tensor().clone();
            move |x: &Tensor| x.matmul(&w)?.sqr()
        };
        let plain = f(&x).unwrap().sum_all().unwrap().backward().unwrap();
        let sink = Arc::new(GradSink::default());
        let y = checkpoint(&x, vec![w.as_tensor().clone()], sink.clone(), f).unwrap();
        let mut grads = y.sum_all().unwrap().backward().unwrap();
        sink.drain_into(&mut grads).unwrap();
        close(
            &values(grads.get(w.as_tensor()).unwrap()),
            &values(plain.get(w.as_tensor()).unwrap()),
        );
    }

    /// The attached backward is the one the input receives; the value is `y` unchanged.
    #[test]
    fn attached_backward_replaces_the_graph() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap()).unwrap();
        let y = (x.as_tensor().detach() * 10.0).unwrap();
        let out = attach_backward(x.as_tensor(), y, |_, _, dy| dy.affine(3.0, 0.0)).unwrap();
        assert_eq!(values(&out), vec![10.0, 20.0, 30.0]);
        let grads = out.sum_all().unwrap().backward().unwrap();
        assert_eq!(values(grads.get(x.as_tensor()).unwrap()), vec![3.0; 3]);
    }
}
