//! Streaming a chain of linears with no model around them (`forward_linear_chain`), and
//! the same chain computed from VRAM-resident weights (`forward_resident`): the harness
//! the engine's bit-exactness tests and `bench stream` use.
use super::engine::{StreamRun, WeightStream};
use super::store::{HostStore, HostUnit};
use crate::error::{Error, Result};
use crate::gpu::{DeviceChunkTable, Gpu, WeightsView};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use half::f16;
use std::sync::Arc;

impl WeightStream<'_> {
    /// Streams every unit once: `y = stack(x)`, `x` `[m, input_width]`, `y` `[m, output_width]`.
    ///
    /// Within a unit each linear reads the previous linear's output when its width fits,
    /// else the unit's input (so a LLaMA block [q, k, v, o, gate, up, down] uses every
    /// matrix); the unit's last output feeds the next unit.
    pub fn forward_linear_chain(&mut self, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<StreamRun> {
        if m == 0 || m > self.max_m {
            return Err(Error::Invalid(format!("batch {m} is outside 1..={} this engine was built for", self.max_m)));
        }
        let (width, out_width) = (self.input_width(), self.output_width());
        let mut acts = self.acts.take().expect("activation buffers are put back after every pass");
        // Queued on the default stream; for_each_unit orders the compute stream after it.
        self.gpu.stream.memcpy_dtod(&x.slice(..m * width), &mut acts[0].slice_mut(..m * width))?;
        let (gpu, store) = (self.gpu, self.store.clone());
        let mut input = 0;
        let run = self.for_each_unit(|u, weights, stream| {
            input = run_unit(gpu, &store.units[u], weights, &mut acts, input, m, stream)?;
            Ok(())
        });
        let result = run.and_then(|run| {
            self.gpu.stream.memcpy_dtod(&acts[input].slice(..m * out_width), &mut y.slice_mut(..m * out_width))?;
            Ok(run)
        });
        self.acts = Some(acts);
        result
    }
}

/// Runs one unit's linears on `stream` (see `forward_linear_chain` for the wiring), with the
/// unit's decoded `weights`. Returns the index of the output buffer.
fn run_unit(
    gpu: &Gpu,
    unit: &HostUnit,
    weights: &[WeightsView],
    acts: &mut [CudaSlice<f16>; 3],
    input: usize,
    m: usize,
    stream: &Arc<CudaStream>,
) -> Result<usize> {
    let in_width = unit.tensors[0].table.cols;
    let (mut cur, mut cur_width) = (input, in_width);
    for (t, w) in unit.tensors.iter().zip(weights) {
        let src = if cur_width == t.table.cols {
            cur
        } else if in_width == t.table.cols {
            input
        } else {
            return Err(Error::Invalid(format!("tensor '{}' takes width {}, the stack offers {cur_width} or {in_width}", t.table.name, t.table.cols)));
        };
        let dst = (0..3).find(|&i| i != src && i != input).expect("three buffers");
        let (xs, ys) = split_two(acts, src, dst);
        gpu.linear_view(xs, m, w, ys, stream)?;
        cur = dst;
        cur_width = t.table.rows;
    }
    Ok(cur)
}

/// `&acts[a]` and `&mut acts[b]` for a ≠ b.
pub fn split_two(acts: &mut [CudaSlice<f16>; 3], a: usize, b: usize) -> (&CudaSlice<f16>, &mut CudaSlice<f16>) {
    assert_ne!(a, b);
    let [x, y, z] = acts;
    match (a, b) {
        (0, 1) => (x, y),
        (0, 2) => (x, z),
        (1, 0) => (y, x),
        (1, 2) => (y, z),
        (2, 0) => (z, x),
        (2, 1) => (z, y),
        _ => unreachable!("indices below 3"),
    }
}

/// The same stack with every unit decoded into VRAM first: the reference a streamed
/// forward must equal bit for bit (same kernels, same plans).
pub fn forward_resident(gpu: &Gpu, store: &HostStore, x: &CudaSlice<f16>, m: usize, y: &mut CudaSlice<f16>) -> Result<()> {
    let s = &gpu.stream;
    let tables: Vec<&DeviceChunkTable> = store.units.iter().flat_map(|u| u.tensors.iter().map(|t| &t.table)).collect();
    let mut decoder = store.decoder(gpu)?;
    let max_width = tables.iter().map(|t| t.rows.max(t.cols)).max().unwrap_or(1);
    let mut acts = [s.alloc_zeros::<f16>(m * max_width)?, s.alloc_zeros::<f16>(m * max_width)?, s.alloc_zeros::<f16>(m * max_width)?];
    let width = store.units[0].tensors[0].table.cols;
    s.memcpy_dtod(&x.slice(..m * width), &mut acts[0].slice_mut(..m * width))?;
    let mut input = 0;
    for unit in &store.units {
        let stored = s.clone_htod(store.bytes(unit.tensors[0].host_offset, unit.size.stored))?;
        let mut decoded = s.alloc_zeros::<u8>(unit.size.decoded.max(1))?;
        let (src, dst) = (stored.device_ptr(s).0, decoded.device_ptr(s).0);
        // SAFETY: the unit's tensors are contiguous in the arena from its first tensor, at
        // the same relative offsets as in a slot; buffers outlive the sync below.
        unsafe { unit.decode(&mut decoder, src, dst, false, s)? };
        let half = if unit.identity(false) { &stored } else { &decoded };
        let weights: Vec<WeightsView> =
            unit.tensors.iter().map(|t| t.table.weights_at(half.slice(t.slot_decoded_offset..t.slot_decoded_offset + t.table.len()))).collect();
        input = run_unit(gpu, unit, &weights, &mut acts, input, m, s)?;
        s.synchronize()?;
        let _ = &mut decoded;
    }
    store.check_regions(&mut decoder, s)?;
    decoder.check(s)?;
    let out_width = store.units.last().and_then(|u| u.tensors.last()).map_or(0, |t| t.table.rows);
    s.memcpy_dtod(&acts[input].slice(..m * out_width), &mut y.slice_mut(..m * out_width))?;
    Ok(())
}
