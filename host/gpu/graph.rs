//! A CUDA graph captured from a stream, with Hopper's programmatic dependent launch on the
//! edges between kernels. A decode step is ~330 short kernels, and each one's launch and
//! block start-up used to follow its predecessor's last block (ncu: our kernels' times sum
//! to ~3.84 ms a token of an 8B Q4_K_M model, the step takes ~4.15). A programmatic edge
//! lets the next kernel's blocks start while the previous one finishes; they stop at
//! `griddepcontrol.wait` (`ptx::await_inputs`, the first statement of every kernel of
//! ours, which build.rs checks) until its writes are visible. Measured end to end (H200,
//! 8B Q4_K_M): 1.00–1.02× the same graph with serial launches (`run --serial-launch`).
//!
//! cudarc's `CudaGraph` instantiates at the end of the capture, before its edges could be
//! changed, hence this small owner of the raw graph and its executable.
use crate::gpu::Kernels;
use cudarc::driver::sys::{self, CUgraphDependencyType, CUgraphNodeType};
use cudarc::driver::{CudaStream, DriverError};
use std::sync::Arc;

/// An instantiated graph and the graph it was made from.
pub struct CapturedGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    stream: Arc<CudaStream>,
    /// How many kernel-to-kernel edges were made programmatic.
    pub programmatic_edges: usize,
}

impl CapturedGraph {
    /// Ends the capture that `stream.begin_capture` started; `None` if nothing was
    /// captured. With `programmatic`, every edge from a kernel to one of `kernels` (which
    /// all wait for their inputs) becomes a programmatic dependency before instantiation;
    /// edges into other kernels (cuBLAS, nvCOMP) and copies stay full dependencies.
    pub fn end_capture(stream: &Arc<CudaStream>, kernels: &Kernels, programmatic: bool) -> Result<Option<Self>, DriverError> {
        stream.context().bind_to_thread()?;
        let mut graph = std::ptr::null_mut();
        // SAFETY: the stream is valid and capturing (the caller began it).
        unsafe { sys::cuStreamEndCapture(stream.cu_stream(), &mut graph) }.result()?;
        if graph.is_null() {
            return Ok(None);
        }
        // Owned from here on: Drop destroys the graph whatever fails below.
        let mut this = CapturedGraph { graph, exec: std::ptr::null_mut(), stream: stream.clone(), programmatic_edges: 0 };
        if programmatic {
            this.programmatic_edges = this.make_edges_programmatic(kernels)?;
        }
        // SAFETY: the graph is valid.
        this.exec = unsafe { cudarc::driver::result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) }?;
        Ok(Some(this))
    }

    fn make_edges_programmatic(&self, kernels: &Kernels) -> Result<usize, DriverError> {
        let mut n = 0usize;
        // SAFETY: null arrays ask for the count only.
        unsafe { sys::cuGraphGetEdges_v2(self.graph, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), &mut n) }.result()?;
        let mut from = vec![std::ptr::null_mut(); n];
        let mut to = vec![std::ptr::null_mut(); n];
        // SAFETY: plain-old-data out-parameters.
        let mut data: Vec<sys::CUgraphEdgeData> = vec![unsafe { std::mem::zeroed() }; n];
        // SAFETY: three arrays of n entries.
        unsafe { sys::cuGraphGetEdges_v2(self.graph, from.as_mut_ptr(), to.as_mut_ptr(), data.as_mut_ptr(), &mut n) }.result()?;
        let programmatic = sys::CUgraphEdgeData {
            from_port: sys::CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC as u8,
            to_port: 0,
            type_: CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC as u8,
            reserved: [0; 5],
        };
        let mut made = 0;
        for i in 0..n {
            if data[i].type_ != CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_DEFAULT as u8
                || kernel_of(from[i])?.is_none()
                || !kernel_of(to[i])?.is_some_and(|f| kernels.waits_for_inputs(f))
            {
                continue;
            }
            // SAFETY: an edge of this graph, replaced by the same edge with other data.
            unsafe {
                sys::cuGraphRemoveDependencies_v2(self.graph, &from[i], &to[i], &data[i], 1).result()?;
                sys::cuGraphAddDependencies_v2(self.graph, &from[i], &to[i], &programmatic, 1).result()?;
            }
            made += 1;
        }
        Ok(made)
    }

    pub fn launch(&self) -> Result<(), DriverError> {
        self.stream.context().bind_to_thread()?;
        // SAFETY: the executable and the stream are valid for the life of self.
        unsafe { cudarc::driver::result::graph::launch(self.exec, self.stream.cu_stream()) }
    }

    /// Uploads the executable's resources now rather than at the first launch.
    pub fn upload(&self) -> Result<(), DriverError> {
        self.stream.context().bind_to_thread()?;
        // SAFETY: as launch.
        unsafe { cudarc::driver::result::graph::upload(self.exec, self.stream.cu_stream()) }
    }
}

/// The function a kernel node runs, `None` for other nodes (or a kernel given as a
/// `CUkernel`, as the runtime API's libraries launch theirs).
fn kernel_of(node: sys::CUgraphNode) -> Result<Option<sys::CUfunction>, DriverError> {
    let mut kind = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
    // SAFETY: a node of a live graph.
    unsafe { sys::cuGraphNodeGetType(node, &mut kind) }.result()?;
    if kind != CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL {
        return Ok(None);
    }
    // SAFETY: a kernel node; plain-old-data out-parameter.
    let mut params: sys::CUDA_KERNEL_NODE_PARAMS = unsafe { std::mem::zeroed() };
    unsafe { sys::cuGraphKernelNodeGetParams_v2(node, &mut params) }.result()?;
    Ok((!params.func.is_null()).then_some(params.func))
}

impl Drop for CapturedGraph {
    fn drop(&mut self) {
        let ctx = self.stream.context();
        if ctx.bind_to_thread().is_err() {
            return;
        }
        // SAFETY: owned; destroyed once.
        unsafe {
            if !self.exec.is_null() {
                ctx.record_err(cudarc::driver::result::graph::exec_destroy(self.exec));
            }
            ctx.record_err(cudarc::driver::result::graph::destroy(self.graph));
        }
    }
}
