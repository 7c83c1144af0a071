//! Ternarization and packing: the absmean quantizer as the reference computes it, source dtype
//! conversion, one module per on-disk layout (each owning its geometry), and the output types
//! with their rule for a projection's type.

pub mod absmean;
pub mod dtype;
pub mod encode;
pub mod layouts;
pub mod out_type;
pub mod ternary;
