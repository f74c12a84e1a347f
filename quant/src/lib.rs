//! Weight and KV-cache formats (FP8, INT8, INT4 group-wise, GGUF blocks) and their
//! quantisers. The format definitions are `no_std` so the device kernels can share them;
//! they land with the models issue (GGUF blocks) and the quantisation work.
#![no_std]
