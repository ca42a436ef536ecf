//! Page-locked host buffers and host-visible event records, as the per-token loops use them.
use super::Gpu;
use crate::error::Result;
use cudarc::driver::{CudaEvent, CudaStream, PinnedHostSlice};

/// Page-locked host memory, zero-filled, addressed through a pointer taken once: cudarc's
/// `PinnedHostSlice` accessors synchronize an event on every access, which a graph capture
/// forbids and a per-token loop does not need. Whoever copies between it and the device
/// orders host access with events.
pub struct PinnedBuffer<T> {
    _mem: PinnedHostSlice<T>,
    ptr: *mut T,
    len: usize,
}

// SAFETY: `ptr` addresses memory that `_mem` owns (itself `Send`) and moves with it, as a
// `Vec`'s buffer does; tensor-parallel ranks run on threads of their own.
unsafe impl<T: Send> Send for PinnedBuffer<T> {}

impl<T: bytemuck::Pod + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> PinnedBuffer<T> {
    /// For what the host writes and the device reads (uploads): write-combined, which the
    /// CPU writes fast and reads very slowly.
    pub fn new(gpu: &Gpu, len: usize) -> Result<Self> {
        Self::with_flags(gpu, len, cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED)
    }

    /// For what the device writes and the host reads (logits, a CPU GEMV's input): cached,
    /// since reading write-combined memory from the CPU is "prohibitively slow" (CUDA C++
    /// Programming Guide, write-combining memory) — tens of µs for a vocabulary of logits.
    pub fn for_host_reads(gpu: &Gpu, len: usize) -> Result<Self> {
        Self::with_flags(gpu, len, 0)
    }

    fn with_flags(gpu: &Gpu, len: usize, flags: u32) -> Result<Self> {
        // SAFETY: zero-filled right below, before any read; zero is a valid `Pod` value.
        let mut mem = unsafe { gpu.ctx.alloc_pinned_with_flags::<T>(len.max(1), flags) }?;
        let ptr = mem.as_mut_ptr()?;
        // SAFETY: `mem` holds len.max(1) elements at ptr.
        unsafe { std::ptr::write_bytes(ptr, 0, len.max(1)) };
        Ok(PinnedBuffer { _mem: mem, ptr, len })
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` addresses `len` initialized elements owned by `_mem`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// Records `event` on `stream` so that the host can wait on it even when the stream is
/// being captured: a plain record inside a capture only orders the graph's nodes, an
/// external one becomes a node that fires the event on every replay (and the driver
/// refuses that flag outside a capture).
pub fn record_external(event: &CudaEvent, stream: &CudaStream) -> Result<()> {
    if stream.capture_status()? == cudarc::driver::sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
        return Ok(event.record(stream)?);
    }
    // SAFETY: both handles are alive for the call; the flag is a valid record flag.
    unsafe {
        cudarc::driver::sys::cuEventRecordWithFlags(
            event.cu_event(),
            stream.cu_stream(),
            cudarc::driver::sys::CUevent_record_flags::CU_EVENT_RECORD_EXTERNAL as u32,
        )
    }
    .result()?;
    Ok(())
}

/// Enqueues `f(data)` on `stream`: the driver calls it on a thread of its own once the
/// work before it finished, and the work after it waits for its return (captured, it
/// becomes a host node of the graph, called on every replay). `f` must not call CUDA.
///
/// # Safety
/// `data` stays valid, and what `f` reads and writes through it untouched by others, for
/// as long as the call may run (for a captured call, as long as the graph may replay).
pub unsafe fn launch_host_func(stream: &CudaStream, f: unsafe extern "C" fn(*mut std::ffi::c_void), data: *mut std::ffi::c_void) -> Result<()> {
    cudarc::driver::sys::cuLaunchHostFunc(stream.cu_stream(), Some(f), data).result()?;
    Ok(())
}

impl Gpu {
    /// An event that records a timestamp (cudarc's default events do not).
    pub fn timed_event(&self) -> Result<CudaEvent> {
        Ok(self.ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?)
    }

    /// Pinned host → device bandwidth in GB/s: the median of `reps` event-timed copies of
    /// `bytes` after one warm-up copy (the link a streaming plan divides by).
    pub fn pinned_h2d_gbps(&self, bytes: usize, reps: usize) -> Result<f64> {
        let s = &self.stream;
        let host = PinnedBuffer::<u8>::new(self, bytes)?;
        let mut dst = s.alloc_zeros::<u8>(bytes.max(1))?;
        let (start, end) = (self.timed_event()?, self.timed_event()?);
        s.memcpy_htod(host.as_slice(), &mut dst)?;
        let mut ms = Vec::with_capacity(reps.max(1));
        for _ in 0..reps.max(1) {
            start.record(s)?;
            s.memcpy_htod(host.as_slice(), &mut dst)?;
            end.record(s)?;
            end.synchronize()?;
            ms.push(start.elapsed_ms(&end)? as f64);
        }
        ms.sort_by(f64::total_cmp);
        Ok(bytes as f64 / (ms[ms.len() / 2] * 1e-3) / 1e9)
    }
}
