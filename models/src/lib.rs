//! Model definitions (one per architecture, whatever the weight format), checkpoint
//! loading, the CPU backend for the executor, and the offline API ([`Llm`]).

pub mod arch;
pub mod backend;
pub mod config;
pub mod fetch;
pub mod generate;
pub mod gpu;
pub mod error;
pub mod hf;
pub mod gguf;
pub mod tokenizer;
pub mod load;
pub mod llm;

pub use llm::{Completion, Device, Llm, LlmConfig, LlmError, SyntheticEngine};
