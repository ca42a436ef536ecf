//! Compiles the `kernels/` crate to PTX (sm_80, sm_90, and sm_90a with the Hopper-only kernels) with rustc's own
//! `nvptx64-nvidia-cuda` target and the nightly pinned in `kernels/rust-toolchain.toml`,
//! then embeds the PTX through `OUT_DIR/kernels_<arch>.ptx` (see host/gpu/module.rs).
//! Fails when the PTX lacks a kernel the host launches (the names in kernels/src/abi.rs)
//! or holds a panic path. Also records the commit for benchmark provenance.
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

/// The host/kernel interface, the same file both sides compile.
#[path = "kernels/src/abi.rs"]
#[allow(dead_code)]
mod abi;

/// Architectures we emit PTX for: Ampere (the oldest with the instructions we use) and
/// Hopper (H100/H200). The driver JIT-compiles the closest one for newer cards. Plus
/// `sm_90a`, Hopper's arch-specific target, the only one whose PTX may hold `wgmma`: its
/// build alone compiles kernels/src/wgmma.rs (`cfg(target_feature = "sm_90a")`), and the
/// host loads it for those kernels on compute capability 9.0 only.
const ARCHS: [&str; 3] = ["sm_80", "sm_90", "sm_90a"];

fn fail(msg: &str) -> ! {
    eprintln!("\nerror: {msg}\n");
    exit(1)
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let kernels = root.join("kernels");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for f in ["src", "Cargo.toml", "rust-toolchain.toml", "nvptx-link.sh"] {
        println!("cargo:rerun-if-changed=kernels/{f}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=CODECLLM_COMMIT={}", commit(&root));

    let channel = pinned_channel(&kernels.join("rust-toolchain.toml"));
    let install = format!("rustup toolchain install {channel} --profile minimal --component rust-src,llvm-tools");
    let sysroot = Command::new("rustup")
        .args(["run", &channel, "rustc", "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| fail(&format!("the GPU kernels need the pinned nightly {channel}; run: {install}")));
    let host = std::env::var("HOST").unwrap();
    let llvm_bin = sysroot.join("lib/rustlib").join(&host).join("bin");
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        fail(&format!("the GPU kernels need the rust-src component of {channel}; run: {install}"));
    }
    if !["llvm-link", "opt", "llc", "llvm-ar"].iter().all(|t| llvm_bin.join(t).is_file()) {
        fail(&format!("the GPU kernels need the llvm-tools component of {channel}; run: {install}"));
    }

    // Shared by every host profile (test, release), so the nvptx build runs once.
    let target_root = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("kernels");
    for arch in ARCHS {
        let ptx = build_ptx(&kernels, &channel, &llvm_bin, &target_root.join(arch), arch);
        check_ptx(&ptx, arch);
        let ptx = ggml_launch_bounds(ptx);
        std::fs::write(out_dir.join(format!("kernels_{arch}.ptx")), ptx).unwrap();
    }
}

/// `<short hash>[-dirty]` of the checkout, or "unknown" outside git. Rebuilt when HEAD or
/// a branch moves; a tree edited after the last build shows as its last commit.
fn commit(root: &Path) -> String {
    for f in [".git/HEAD", ".git/refs"] {
        if root.join(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    let git = |args: &[&str]| Command::new("git").arg("-C").arg(root).args(args).output().ok().filter(|o| o.status.success());
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else { return "unknown".into() };
    let hash = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{hash}-dirty")
    } else {
        hash
    }
}

fn pinned_channel(toolchain_file: &Path) -> String {
    let text = std::fs::read_to_string(toolchain_file).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", toolchain_file.display())));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.split('"').nth(1))
        .next()
        .map(str::to_owned)
        .unwrap_or_else(|| fail(&format!("{} names no channel", toolchain_file.display())))
}

fn build_ptx(kernels: &Path, channel: &str, llvm_bin: &Path, target_dir: &Path, arch: &str) -> String {
    let linker = kernels.join("nvptx-link.sh");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", channel, "cargo", "build", "--release", "--target", "nvptx64-nvidia-cuda", "-Zbuild-std=core"])
        .arg("--manifest-path")
        .arg(kernels.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(kernels);
    // The outer cargo's settings (toolchain, flags, target dir) must not leak into the
    // nested nightly build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTUP_TOOLCHAIN")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", format!("-Ctarget-cpu={arch}\x1f-Clinker={}", linker.display())).env("CODECLLM_LLVM_BIN", llvm_bin);
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("cannot run rustup: {e}")));
    if !status.success() {
        fail(&format!("building the GPU kernels for {arch} failed (see the output above)"));
    }
    let ptx_path = target_dir.join("nvptx64-nvidia-cuda/release/codecllm_kernels.ptx");
    std::fs::read_to_string(&ptx_path).unwrap_or_else(|e| fail(&format!("no PTX at {}: {e}", ptx_path.display())))
}

/// The tensor-core `ggml_gemv_*` and `ggml_mma_*` entries with PTX launch bounds (each
/// layout's `KernelBounds`): the performance-tuning directives go between an entry's
/// parameter list and its body.
fn ggml_launch_bounds(mut ptx: String) -> String {
    let entries = abi::GGML_LAYOUTS.iter().flat_map(|l| [(l.gemv, l.gemv_bounds)].into_iter().chain(l.mma.into_iter().zip(l.mma_bounds)));
    for (name, b) in entries {
        let bounds = format!("\n.maxntid {}, 1, 1\n.minnctapersm {}", 32 * abi::GGML_MMA_WARPS, b.blocks_per_sm);
        let entry = ptx.find(&format!(".entry {name}(")).unwrap_or_else(|| fail(&format!("the PTX lacks {name}")));
        let close = entry + ptx[entry..].find("\n)").unwrap_or_else(|| fail(&format!("no parameter list for {name} in the PTX"))) + 2;
        ptx.insert_str(close, &bounds);
    }
    ptx
}

/// A `.func` declared but never defined (typically core's panic machinery) makes the
/// driver reject the whole module at load time; catch it here instead.
fn check_ptx(ptx: &str, arch: &str) {
    let mut declared = Vec::new();
    let mut defined = std::collections::HashSet::new();
    let mut rest = ptx;
    while let Some(pos) = rest.find(".func") {
        rest = &rest[pos + 5..];
        let mut s = rest.trim_start();
        if s.starts_with('(') {
            // Return parameter list.
            s = s[s.find(')').map_or(s.len(), |p| p + 1)..].trim_start();
        }
        let name: String = s.chars().take_while(|c| c.is_alphanumeric() || "_$.".contains(*c)).collect();
        let body_first = match (s.find('{'), s.find(';')) {
            (Some(b), Some(semi)) => b < semi,
            (Some(_), None) => true,
            _ => false,
        };
        if body_first {
            defined.insert(name);
        } else {
            declared.push(name);
        }
    }
    let missing: Vec<_> = declared.into_iter().filter(|n| !defined.contains(n)).collect();
    if !missing.is_empty() {
        fail(&format!("the {arch} PTX declares functions without a body (a panic path in kernels/?): {}", missing.join(", ")));
    }
    // Bodies or not, core's panic machinery means a kernel can panic, which the crate's
    // rules forbid (a panic is a trap on the GPU: the context is lost).
    let panics: std::collections::BTreeSet<&str> = ptx.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| w.contains("panicking")).collect();
    if !panics.is_empty() {
        fail(&format!(
            "the {arch} PTX calls core's panic machinery (a panic path in kernels/: indexing, division by a runtime value, unwrap): {}",
            panics.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if !ptx.lines().any(|l| l.trim() == format!(".target {arch}")) {
        fail(&format!("the {arch} PTX does not name its target (.target {arch})"));
    }
    let hopper = arch == "sm_90a";
    if !hopper && ptx.contains("wgmma") {
        fail(&format!("the {arch} PTX holds wgmma code, which only sm_90a accepts (kernels/src/wgmma.rs must be compiled for sm_90a alone)"));
    }
    // Each entry's name and the PTX up to the next entry (its body).
    let entry_bodies: Vec<(&str, &str)> = ptx
        .split(".entry")
        .skip(1)
        .filter_map(|rest| rest.trim_start().split(|c: char| !(c.is_alphanumeric() || c == '_')).next().map(|name| (name, rest)))
        .collect();
    // The host makes the edges into these kernels programmatic (host/gpu/graph.rs): one
    // that does not wait for its predecessor would read its inputs before they are written.
    if arch != "sm_80" {
        let unwaited: Vec<&str> = entry_bodies.iter().filter(|(_, body)| !body.contains("griddepcontrol.wait")).map(|(name, _)| *name).collect();
        if !unwaited.is_empty() {
            fail(&format!("the {arch} PTX has entries that do not begin with ptx::await_inputs() (griddepcontrol.wait): {}", unwaited.join(", ")));
        }
    }
    let entries: std::collections::HashSet<&str> = entry_bodies.iter().map(|(name, _)| *name).collect();
    let wgmma = abi::WGMMA_TILES.iter().map(|t| t.name).filter(|_| hopper);
    let ggml = abi::GGML_LAYOUTS.iter().flat_map(|l| l.mma.into_iter().chain([l.gemv, l.dequant]));
    let launched = abi::GEMV_KERNELS
        .iter()
        .chain([&abi::GEMV_F16])
        .chain(abi::OTHER_KERNELS.iter())
        .copied()
        .chain(abi::GEMM_TILES.iter().map(|t| t.name))
        .chain(ggml)
        .chain(wgmma);
    let absent: Vec<&str> = launched.filter(|n| !entries.contains(n)).collect();
    if !absent.is_empty() {
        fail(&format!("the {arch} PTX lacks kernels the host launches (named in kernels/src/abi.rs): {}", absent.join(", ")));
    }
}
