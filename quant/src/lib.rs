//! Weight and KV-cache formats and their (de)quantisers.
//!
//! `no_std` so the device kernels can share the format definitions. Today: the GGML/GGUF
//! tensor types ([`GgmlType`]) and their block layouts ([`ggml`]); FP8, INT8, INT4
//! group-wise, AWQ and GPTQ follow with the quantisation work.
#![no_std]

pub mod ggml;

pub use ggml::GgmlType;
