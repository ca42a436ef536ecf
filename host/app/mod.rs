//! What the command line shows on top of the library: the SmolLM2 demo, the benchmarks,
//! and the fuzz targets' entry points.
pub mod bench;
pub mod demo;
pub mod fuzzing;
