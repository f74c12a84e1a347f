//! Model definitions (one per architecture, whatever the weight format) and checkpoint
//! loading. The LLaMA family, Qwen2 and GPT-2 land with the models issue; this crate exists
//! now so that the workspace shows the architecture.

pub mod arch;
pub mod config;
pub mod fetch;
pub mod generate;
pub mod error;
pub mod hf;
pub mod gguf;
pub mod tokenizer;
pub mod load;
pub mod llm;

pub use llm::{Completion, Llm, LlmError};
