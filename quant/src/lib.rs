//! Weight and KV-cache formats and their (de)quantisers.
//!
//! `no_std` so the device kernels can share the format definitions. Today: the GGML/GGUF
//! tensor types ([`GgmlType`]) and their block layouts ([`ggml`]), block dequantisation
//! ([`dequant`]) and ggml's reference quantisers for the legacy 32-element formats
//! ([`quantize`]); FP8, INT8, INT4 group-wise, AWQ and GPTQ follow with the quantisation
//! work.
#![no_std]

pub mod dequant;
pub mod ggml;
pub mod quantize;

pub use dequant::{DequantError, dequantize, supports_dequantize};
pub use ggml::GgmlType;
pub use quantize::{quantize_q4_0, quantize_q4_1, quantize_q5_0, quantize_q5_1, quantize_q8_0};
