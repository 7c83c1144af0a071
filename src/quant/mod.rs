//! Ternarization and packing: the absmean quantizer as the reference computes it, source dtype
//! conversion, and one module per on-disk layout.

pub mod absmean;
pub mod dtype;
pub mod layouts;
pub mod ternary;
