//! The offline API in a few lines: load a model (fetched on first use), generate.
//!
//! `cargo run --release -p models --example generate -- "The capital of France is"`

use host_runtime::sampling::SamplingParams;
use models::{Llm, LlmConfig};

fn main() -> Result<(), models::LlmError> {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "The capital of France is".into());
    let llm = Llm::new(LlmConfig::new("smollm2"))?;
    let sampling = SamplingParams { temperature: 0.0, max_new_tokens: 16, ..Default::default() };
    for out in llm.generate(&[prompt.as_str()], &sampling)? {
        println!("{}{}", prompt, out.text);
    }
    Ok(())
}
