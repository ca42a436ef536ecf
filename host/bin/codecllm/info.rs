//! `codecllm info`.
use codecllm::container::{Container, Encoding, Index, VERSION};
use codecllm::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<bool> {
    let c = Container::open(&a.file)?;
    if a.json {
        #[derive(serde::Serialize)]
        struct Info<'a> {
            file: String,
            version: u32,
            file_bytes: u64,
            index: &'a Index,
        }
        super::json_out(&Info { file: c.path().display().to_string(), version: VERSION, file_bytes: c.file_len, index: &c.index });
        return Ok(true);
    }
    println!("{}: codecllm container v{VERSION}, {} bytes, {} tensors", c.path().display(), c.file_len, c.index.tensors.len());
    for (k, v) in &c.index.metadata {
        // Tokenizer vocabularies run to megabytes: show the start (all of it is in --json).
        let shown: String = v.chars().take(100).collect();
        let more = if shown.len() < v.len() { format!(" … ({} bytes)", v.len()) } else { String::new() };
        println!("  {k}: {shown}{more}");
    }
    println!(
        "{:<56} {:>5} {:>16} {:>10} {:>6} {:>7} {:>12} {:>7} {:>8}",
        "tensor", "dtype", "shape", "encoding", "codec", "chunks", "stored", "ratio", "entropy"
    );
    for t in &c.index.tensors {
        let (enc, stored, decoded, entropy) = match &t.encoding {
            Encoding::Lossless => ("lossless".to_string(), t.data.stored_bytes(), t.data.len, None),
            Encoding::Ggml { ggml_type, .. } => {
                let name = codecllm::codec::ggml::GgmlType::from_id(*ggml_type).map_or(format!("ggml/{ggml_type}"), |t| t.name().to_string());
                (name, t.data.stored_bytes(), t.data.len, None)
            }
            Encoding::Int8 { group_size, scales, entropy_bits, .. } => {
                let g = if Some(*group_size as u64) == t.shape.last().copied() { "int8/row".to_string() } else { format!("int8/g{group_size}") };
                (g, t.data.stored_bytes() + scales.stored_bytes(), t.data.len + scales.len, *entropy_bits)
            }
        };
        // Entropy as a share of 8 bits, comparable with the ratio beside it.
        let entropy = entropy.map_or("-".to_string(), |b| format!("{:.3}", b / 8.0));
        let shape = format!("{:?}", t.shape);
        println!(
            "{:<56} {:>5} {:>16} {:>10} {:>6} {:>7} {:>12} {:>7} {:>8}",
            t.name,
            format!("{:?}", t.dtype),
            shape,
            enc,
            t.data.codec.name(),
            t.data.chunks.len(),
            stored,
            super::ratio(stored, decoded),
            entropy
        );
    }
    Ok(true)
}
