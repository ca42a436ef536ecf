//! Whole-model work on containers: checkpoint → container (`compress`), whole-container
//! checks (`verify`), and the f64 oracle the GPU kernels are tested against (`reference`).
pub mod compress;
pub mod reference;
pub mod verify;
