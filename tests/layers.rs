//! The library's layer rule (host/lib.rs): each folder of `host/` imports only from the
//! folders before it in `LAYERS` (and from itself and `error`). Checked on the sources, so
//! an import against the order — the start of a cycle — fails the tests, not a review.
use std::path::Path;

/// Lowest first; the order host/lib.rs documents.
const LAYERS: [&str; 9] = ["error", "container", "codec", "import", "gpu", "pipeline", "stream", "model", "app"];

fn rank(module: &str) -> Option<usize> {
    // `abi` (kernels/src/abi.rs, included at the crate root) is shared like `error`.
    if module == "abi" {
        return Some(0);
    }
    LAYERS.iter().position(|&l| l == module)
}

/// The crate's top-level modules a source file names through `crate::` paths, with the line.
fn crate_refs(src: &str) -> Vec<(String, usize)> {
    let mut refs = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::b, c}`: the first segment of each item.
                let inner = group.split('}').next().unwrap_or("");
                refs.extend(inner.split(',').map(|item| (item.trim().split("::").next().unwrap_or("").to_string(), i + 1)));
            } else {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                refs.push((name, i + 1));
            }
        }
    }
    refs.retain(|(name, _)| !name.is_empty() && name != "Result" && name != "Error" && name != "GpuError");
    refs
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn folders_import_only_from_lower_layers() {
    let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("host");
    let mut files = Vec::new();
    rust_files(&host, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&host).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let folder = first.trim_end_matches(".rs").to_string();
        if folder == "bin" || folder == "lib" {
            continue; // the binary and the crate root may name every layer
        }
        let own = rank(&folder).unwrap_or_else(|| panic!("{}: folder '{folder}' is not in LAYERS (add it where it belongs)", rel.display()));
        for (module, line) in crate_refs(&std::fs::read_to_string(f).unwrap()) {
            checked += 1;
            match rank(&module) {
                Some(r) if r <= own => {}
                Some(_) => violations.push(format!("{}:{line}: {folder} imports {module}, a higher layer", rel.display())),
                None => violations.push(format!("{}:{line}: crate::{module} is not a layer", rel.display())),
            }
        }
    }
    assert!(checked > 100, "only {checked} crate:: paths found: the scan is broken");
    assert!(violations.is_empty(), "imports against the layer order:\n{}", violations.join("\n"));
}

#[test]
fn the_check_sees_grouped_and_inline_paths() {
    let refs = crate_refs("use crate::{gpu::Gpu, model::x};\nlet a = crate::stream::f(); // crate::app\n");
    let names: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["gpu", "model", "stream"]);
}
