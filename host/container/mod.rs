//! The `.clm` container (docs/FORMAT.md): the format's types and limits, the validating
//! reader and the atomic writer.
mod format;
mod reader;
mod writer;

pub use format::*;
pub use reader::Container;
pub use writer::{ContainerWriter, EncodedBlob, StoredChunk};
