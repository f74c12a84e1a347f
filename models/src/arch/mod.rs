//! Architecture definitions on the CPU reference backend. One definition per architecture,
//! whatever the weight format the checkpoint came in: loaders convert to these weights.

pub mod layers;
pub mod llama;

pub use layers::{KvCache, Linear};
pub use llama::{LlamaLayer, LlamaModel};
