//! The interface the host and the kernels share, defined once. The host includes this
//! file with `#[path]` (host/gpu/abi.rs), and build.rs checks that every kernel named here
//! is an entry point of the PTX, so a rename on either side fails the build, not a launch.
//! Only `core` items: the file compiles for nvptx64 and for the host.

/// One chunk of a decode batch (`scatter_chunks`): where its stored bytes are, where its
/// decoded bytes go, and which nvCOMP slot decodes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Byte offset of the stored chunk in the batch's stored buffer (16-aligned).
    pub src_offset: u64,
    /// Byte offset of the decoded chunk in the output buffer.
    pub dst_offset: u64,
    /// Stored (compressed or raw) bytes.
    pub stored_len: u32,
    /// Decoded bytes.
    pub decoded_len: u32,
    /// Index in the decoder's status arrays (and nvCOMP's argument arrays), or `RAW_SLOT`
    /// for a raw chunk the kernel copies itself.
    pub slot: u32,
    /// `rans`: which of the batch's decode tables (`RANS_LUT_ENTRIES` each) the chunk uses.
    pub lut: u32,
}
const _: () = assert!(core::mem::size_of::<ChunkEntry>() == 32);

/// `ChunkEntry::slot` of a chunk stored raw.
pub const RAW_SLOT: u32 = u32::MAX;

/// Entries of a `rans` decode table, one per 12-bit probability slot.
pub const RANS_LUT_ENTRIES: usize = 4096;
/// Bytes before a coded `rans` chunk's 16-bit words: the 32 lanes' initial states.
pub const RANS_HEADER_BYTES: u32 = 128;
/// Warps (chunks) per block of `rans_decode_chunks`.
pub const RANS_WARPS: u32 = 4;

/// Largest batch the GEMV kernels take (one FP32 accumulator per batch row per lane).
pub const GEMV_MAX_M: usize = 8;
/// The GEMV entry for batch `m` is `GEMV_KERNELS[m - 1]`.
pub const GEMV_KERNELS: [&str; GEMV_MAX_M] =
    ["gemv_w8a16_m1", "gemv_w8a16_m2", "gemv_w8a16_m3", "gemv_w8a16_m4", "gemv_w8a16_m5", "gemv_w8a16_m6", "gemv_w8a16_m7", "gemv_w8a16_m8"];

/// A GGUF block type as the GPU holds it (`ggml.rs`): each field of ggml's block struct
/// (`ggml-common.h`, in struct order) gets a plane of its own, the planes one after another
/// and each padded to 16 bytes, blocks row-major within each. The blocks' bytes are kept as
/// they are (the dequantized values are the source's, bit for bit); only their order
/// changes, so that every field loads with aligned loads (a `block_q8_0` is 34 bytes, a
/// `block_q6_K` 210: in the file, most blocks start at odd multiples of 2).
#[derive(Clone, Copy, Debug)]
pub struct GgmlLayout {
    /// ggml's name of the type.
    pub name: &'static str,
    /// ggml's type id.
    pub id: u32,
    /// Values per block.
    pub block_elems: u32,
    /// Bytes of each field of the block.
    pub fields: &'static [u32],
    /// The GEMV for batch 1 (CUDA cores).
    pub gemv: &'static str,
    /// The GEMVs for batches 2 to 16 (tensor cores, the batch a parameter): `mma[i]` computes
    /// up to 8 · (i + 1) rows of x in one launch.
    pub mma: [&'static str; GGML_MMA_TILES],
    /// Dequantization to FP16 (`[rows, cols]` row-major).
    pub dequant: &'static str,
    /// Values of a sub-block whose activation sum `gemv` keeps in shared memory: the types
    /// whose GEMV tasks are one sub-block with a min (Q4_1, Q5_1; 0 for the others).
    pub gemv_sum_values: u32,
    /// `gemv`'s launch bounds and steps in flight, and each `mma` entry's.
    pub gemv_bounds: KernelBounds,
    pub mma_bounds: [KernelBounds; GGML_MMA_TILES],
}

/// How a GGUF GEMV entry trades registers for warps: `blocks_per_sm` blocks of
/// `GGML_MMA_WARPS` warps must fit one SM at once (build.rs gives the entry PTX launch
/// bounds, `.maxntid` / `.minnctapersm`, what CUDA C's `__launch_bounds__` emits; rustc
/// has no attribute for them: 2, 3, 4 → 128, 80, 64 registers a lane), and each warp
/// loads `steps` (1 or 2) steps before computing on them. These kernels are latency-bound
/// at 2 blocks (ncu: 0.88 eligible warps a scheduler), but spill once a type's tasks
/// outgrow the registers. Chosen per type and entry from `bench kernels --ggml` of each
/// setting in one lease (H200; BENCHMARKS.md, eighth session).
#[derive(Clone, Copy, Debug)]
pub struct KernelBounds {
    pub blocks_per_sm: u32,
    pub steps: u32,
}

impl GgmlLayout {
    pub const fn block_bytes(&self) -> u32 {
        let (mut b, mut i) = (0, 0);
        while i < self.fields.len() {
            b += self.fields[i];
            i += 1;
        }
        b
    }
    /// Byte offset of field `field`'s plane in a tensor of `blocks` blocks (with
    /// `field = fields.len()`: the tensor's size).
    pub const fn plane(&self, field: usize, blocks: u64) -> u64 {
        let (mut off, mut i) = (0, 0);
        while i < field {
            off += (self.fields[i] as u64 * blocks).div_ceil(16) * 16;
            i += 1;
        }
        off
    }
    pub const fn bytes(&self, blocks: u64) -> u64 {
        self.plane(self.fields.len(), blocks)
    }
    /// `bytes` of a tensor of `values` values (whole blocks).
    pub const fn values_bytes(&self, values: u64) -> u64 {
        self.bytes(values / self.block_elems as u64)
    }
    /// Dynamic shared memory of `gemv` for rows of `k` values: the activations' sums over
    /// each sub-block, f32 `[k / gemv_sum_values][GGML_GEMV_BATCH]`.
    pub const fn gemv_shared_bytes(&self, k: u64) -> u64 {
        if self.gemv_sum_values == 0 {
            0
        } else {
            k / self.gemv_sum_values as u64 * GGML_GEMV_BATCH as u64 * 4
        }
    }
}

macro_rules! ggml_layout {
    ($name:literal, $lower:literal, $id:literal, $elems:literal, [$($f:literal),*], $sum_values:literal, $gb:literal x $gs:literal, $n8b:literal x $n8s:literal, $n16b:literal x $n16s:literal) => {
        GgmlLayout {
            name: $name,
            id: $id,
            block_elems: $elems,
            fields: &[$($f),*],
            gemv: concat!("ggml_gemv_", $lower),
            mma: [concat!("ggml_mma_", $lower, "_n8"), concat!("ggml_mma_", $lower, "_n16")],
            dequant: concat!("ggml_dequant_", $lower),
            gemv_sum_values: $sum_values,
            gemv_bounds: KernelBounds { blocks_per_sm: $gb, steps: $gs },
            mma_bounds: [KernelBounds { blocks_per_sm: $n8b, steps: $n8s }, KernelBounds { blocks_per_sm: $n16b, steps: $n16s }],
        }
    };
}

/// The block types the GPU computes on as stored (the others are converted to INT8 at
/// load). Fields as in ggml-common.h: `d` (and `m` / `dmin`) FP16 scales, `qh` / `hmask`
/// high bits, `qs` / `ql` packed quants, `scales` packed sub-block scales. Then
/// `gemv_sum_values` and the `KernelBounds` (blocks an SM x steps) of `gemv`, `mma[0]`
/// (n8) and `mma[1]` (n16).
pub const GGML_LAYOUTS: [GgmlLayout; 10] = [
    ggml_layout!("Q4_0", "q4_0", 2, 32, [2, 16], 0, 4 x 1, 2 x 2, 2 x 2),               // d, qs
    ggml_layout!("Q4_1", "q4_1", 3, 32, [2, 2, 16], 32, 4 x 1, 3 x 1, 3 x 1),           // d, m, qs
    ggml_layout!("Q5_0", "q5_0", 6, 32, [2, 4, 16], 0, 4 x 1, 3 x 1, 3 x 1),            // d, qh, qs
    ggml_layout!("Q5_1", "q5_1", 7, 32, [2, 2, 4, 16], 32, 4 x 1, 3 x 1, 3 x 1),        // d, m, qh, qs
    ggml_layout!("Q8_0", "q8_0", 8, 32, [2, 32], 0, 4 x 1, 3 x 1, 3 x 1),               // d, qs
    ggml_layout!("Q4_K", "q4_k", 12, 256, [2, 2, 12, 128], 0, 3 x 1, 3 x 1, 2 x 2),     // d, dmin, scales, qs
    ggml_layout!("Q5_K", "q5_k", 13, 256, [2, 2, 12, 32, 128], 0, 3 x 1, 2 x 2, 2 x 2), // d, dmin, scales, qh, qs
    ggml_layout!("Q6_K", "q6_k", 14, 256, [128, 64, 16, 2], 0, 3 x 1, 3 x 1, 2 x 2),    // ql, qh, scales, d
    ggml_layout!("Q2_K", "q2_k", 10, 256, [16, 64, 2, 2], 0, 2 x 2, 3 x 1, 2 x 2),      // scales, qs, d, dmin
    ggml_layout!("Q3_K", "q3_k", 11, 256, [32, 64, 12, 2], 0, 2 x 2, 2 x 2, 2 x 2),     // hmask, qs, scales, d
];

// The kernels have a one-step and a two-step loop; 8 blocks of 256 threads leave 32
// registers a lane, the fewest ptxas takes.
const _: () = {
    const fn valid(b: KernelBounds) -> bool {
        b.blocks_per_sm >= 1 && b.blocks_per_sm <= 8 && (b.steps == 1 || b.steps == 2)
    }
    let mut i = 0;
    while i < GGML_LAYOUTS.len() {
        let l = &GGML_LAYOUTS[i];
        assert!(valid(l.gemv_bounds) && valid(l.mma_bounds[0]) && valid(l.mma_bounds[1]));
        i += 1;
    }
};

/// Index in `GGML_LAYOUTS` of ggml type `id`.
pub const fn ggml_layout(id: u32) -> Option<usize> {
    let mut i = 0;
    while i < GGML_LAYOUTS.len() {
        if GGML_LAYOUTS[i].id == id {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `ggml_gemv_*` (exact integer weights on tensor cores): the batch rows it takes (lane t's
/// k slots meet x in B's columns 2t and 2t + 1 only). Its rows, warps and launch bounds are
/// `ggml_mma_*`'s.
pub const GGML_GEMV_BATCH: u32 = 2;
/// `ggml_mma_*` (M = 3..=16, tensor cores): n8 tiles of the batch the widest computes, weight
/// rows each block computes (one m16 tile), and its warps, which split the rows' K between
/// them.
pub const GGML_MMA_TILES: usize = 2;
pub const GGML_MMA_ROWS: u32 = 16;
pub const GGML_MMA_WARPS: u32 = 8;

/// The FP16-weight GEMV (the FP16 mode's products at M = 1).
pub const GEMV_F16: &str = "gemv_f16_m1";

/// A tensor-core GEMM variant (`gemm.rs`).
#[derive(Clone, Copy, Debug)]
pub struct GemmTile {
    pub name: &'static str,
    /// m16 tiles per warp.
    pub mt: usize,
    /// n8 tiles per warp.
    pub nt: usize,
    /// Warps per block, side by side along N.
    pub warps: usize,
    /// K splits must be multiples of this many columns.
    pub k_step: usize,
    /// Activations staged in shared memory (else loaded straight into registers).
    pub smem: bool,
}

const fn tile(name: &'static str, mt: usize, nt: usize, smem: bool) -> GemmTile {
    let (warps, k_step) = if smem { (8, 128) } else { (4, 64) };
    GemmTile { name, mt, nt, warps, k_step, smem }
}

/// The GEMM variants the host may plan: register-only (4 warps) and shared-memory
/// activation tiles (8 warps). Kept: those that won some shape in `bench kernels --tune`.
pub const GEMM_TILES: [GemmTile; 5] = [
    tile("gemm_w8a16_mt1_nt2", 1, 2, false),
    tile("gemm_w8a16_mt2_nt4", 2, 4, false),
    tile("gemm_w8a16_mt4_nt4_pf", 4, 4, false),
    tile("gemm_smem_mt1_nt2", 1, 2, true),
    tile("gemm_smem_mt2_nt2", 2, 2, true),
];

/// Index of the GEMM variant `name` in `GEMM_TILES` (for the kernels' compile-time checks).
pub const fn gemm_tile(name: &str) -> Option<usize> {
    let mut i = 0;
    while i < GEMM_TILES.len() {
        if same_name(GEMM_TILES[i].name, name) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Columns of k per pipeline stage of the Hopper GEMM (`wgmma.rs`): four k16 wgmma steps.
pub const WGMMA_BK: usize = 64;
/// Bytes per weight row in a stage's INT8 tile: `WGMMA_BK` plus 16 of padding, so the
/// 32-bit fragment loads of a warp's 8 rows fall in distinct banks (80 / 4 = 20 ≡ 20 mod 32,
/// and 20·g mod 32 differs for g = 0..8 by multiples of 4).
pub const WGMMA_A_PITCH: usize = WGMMA_BK + 16;

/// A Hopper GEMM variant (`wgmma.rs`, in the sm_90a PTX only): weights are the wgmma A
/// operand (64 output channels per warpgroup, FP16 fragments converted in registers),
/// `bm` batch rows the B operand (from shared memory), `stages` k blocks in a `cp.async`
/// ring.
#[derive(Clone, Copy, Debug)]
pub struct WgmmaTile {
    pub name: &'static str,
    /// Batch rows per block: the wgmma N (a multiple of 8 up to 256).
    pub bm: usize,
    /// Warpgroups per block, 64 weight rows each.
    pub warpgroups: usize,
    /// Depth of the shared-memory ring, in `WGMMA_BK`-column blocks (at least 3).
    pub stages: usize,
}

impl WgmmaTile {
    /// Weight rows (output channels) per block.
    pub const fn bn(&self) -> usize {
        64 * self.warpgroups
    }
    pub const fn threads(&self) -> usize {
        128 * self.warpgroups
    }
    /// One stage: the INT8 weight tile (`bn` rows of `WGMMA_A_PITCH` bytes), then the FP16
    /// activation tile (`bm × WGMMA_BK`, wgmma's no-swizzle K-major layout).
    pub const fn stage_bytes(&self) -> usize {
        self.bn() * WGMMA_A_PITCH + self.bm * WGMMA_BK * 2
    }
    /// Dynamic shared memory per block (the host raises the function's limit to this).
    pub const fn smem_bytes(&self) -> usize {
        self.stages * self.stage_bytes()
    }
}

const fn wg_tile(name: &'static str, bm: usize, stages: usize) -> WgmmaTile {
    WgmmaTile { name, bm, warpgroups: 2, stages }
}

/// The Hopper GEMM variants `bench kernels --tune` measures (`Gpu::plan` does not pick them
/// yet: not yet run on a GPU). Shared memory: 96, 108, 104 and 168 KiB per block.
pub const WGMMA_TILES: [WgmmaTile; 4] =
    [wg_tile("wgmma_w8a16_m16", 16, 8), wg_tile("wgmma_w8a16_m64", 64, 6), wg_tile("wgmma_w8a16_m128", 128, 4), wg_tile("wgmma_w8a16_m256", 256, 4)];

/// Index of the Hopper GEMM variant `name` in `WGMMA_TILES` (for the kernels' checks).
pub const fn wgmma_tile(name: &str) -> Option<usize> {
    let mut i = 0;
    while i < WGMMA_TILES.len() {
        if same_name(WGMMA_TILES[i].name, name) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// u32 words per batch row in the places array RoPE and attention read: the row's position
/// in its sequence, then the first KV cache row of that sequence (sequences decoded
/// together each own a run of cache rows; one sequence alone starts at row 0).
pub const PLACE_WORDS: usize = 2;

/// Threads per RMSNorm block (one block per row); the kernel returns without writing on
/// any other block size. 1024: a decode step's norm is one block, and a 4096-wide row then
/// takes each thread one batch of loads (`llama.rs`'s `NORM_BATCH`).
pub const NORM_THREADS: u32 = 1024;
/// Warps per attention block (one block per (row, head)); likewise checked by the kernel.
pub const ATT_WARPS: u32 = 8;
/// Largest head dimension the attention kernel holds in registers and shared memory
/// (Gemma 3's 256).
pub const ATT_MAX_HEAD_DIM: usize = 256;
/// Blocks a split attention launch aims for: two per SM on a 132-SM Hopper. A decode
/// step has one block per head (32 for an 8B model, 9 for SmolLM2), which leaves most SMs
/// idle while each block walks the whole context; splitting the positions over
/// `attention_splits` blocks per head puts them all to work.
pub const ATT_SPLIT_BLOCKS: usize = 264;
/// Most splits of one (row, head): 32 × 8 warps × 32 positions covers 8192 cached
/// positions in one pass of each warp.
pub const ATT_MAX_SPLITS: usize = 32;
/// f32 values of one split's partial result: its running max, its softmax sum, then the
/// unnormalized output of `ATT_MAX_HEAD_DIM` dims.
pub const ATT_PARTIAL: usize = ATT_MAX_HEAD_DIM + 2;

/// How many blocks share the positions of each of `items` (row, head) pairs: 1 when the
/// items alone fill the GPU (prefill), else enough to reach `ATT_SPLIT_BLOCKS`.
pub const fn attention_splits(items: usize) -> usize {
    if items == 0 || items >= ATT_SPLIT_BLOCKS {
        return 1;
    }
    let s = ATT_SPLIT_BLOCKS.div_ceil(items);
    if s > ATT_MAX_SPLITS {
        ATT_MAX_SPLITS
    } else {
        s
    }
}
/// Partial results a split launch writes at most: `items · attention_splits(items)` is
/// below `ATT_SPLIT_BLOCKS + items` ≤ 2 · `ATT_SPLIT_BLOCKS` whenever it splits.
pub const ATT_MAX_PARTIALS: usize = 2 * ATT_SPLIT_BLOCKS;
// Checked for every item count that splits (compile time, both sides).
const _: () = {
    let mut items = 1;
    while items < ATT_SPLIT_BLOCKS {
        assert!(items * attention_splits(items) <= ATT_MAX_PARTIALS && attention_splits(items) <= ATT_MAX_SPLITS);
        items += 1;
    }
};

pub const GEMV3_M1: &str = "gemv3_w8a16_m1";
pub const GEMM_REDUCE_SPLITS: &str = "gemm_reduce_splits";
pub const DEQUANT_I8_F16: &str = "dequant_i8_f16";
pub const SCATTER_CHUNKS: &str = "scatter_chunks";
pub const CHECK_DECODED: &str = "check_decoded";
pub const RMSNORM: &str = "rmsnorm_f32_f16";
pub const ADD_RMSNORM: &str = "add_rmsnorm_f32_f16";
pub const EMBED: &str = "embed_f16_f32";
pub const SILU_MUL: &str = "silu_mul_f16";
pub const ROPE_QK_STORE: &str = "rope_qk_store_f16";
pub const ATTENTION: &str = "attention_f16";
pub const ATTENTION_MERGE: &str = "attention_merge_f16";
pub const RANS_DECODE_CHUNKS: &str = "rans_decode_chunks";
pub const GELU_MUL: &str = "gelu_mul_f16";
pub const ADD_BIAS: &str = "add_bias_f16";
pub const HEAD_RMSNORM: &str = "head_rmsnorm_f16";
pub const RMSNORM_INPLACE: &str = "rmsnorm_f16_inplace";

/// Every kernel the host launches besides the GEMV and GEMM tables above.
pub const OTHER_KERNELS: [&str; 17] = [
    GELU_MUL,
    ADD_BIAS,
    HEAD_RMSNORM,
    RMSNORM_INPLACE,
    GEMV3_M1,
    GEMM_REDUCE_SPLITS,
    DEQUANT_I8_F16,
    SCATTER_CHUNKS,
    CHECK_DECODED,
    RMSNORM,
    ADD_RMSNORM,
    EMBED,
    SILU_MUL,
    ROPE_QK_STORE,
    ATTENTION,
    ATTENTION_MERGE,
    RANS_DECODE_CHUNKS,
];

/// `a == b`, usable in constant assertions (the kernels check their entry names against
/// the tables above at compile time).
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
