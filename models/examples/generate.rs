//! The offline API in a few lines: load a model (fetched on first use), generate.
//!
//! `cargo run --release -p models --example generate -- "The capital of France is"`

fn main() -> Result<(), models::LlmError> {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "The capital of France is".into());
    let llm = models::Llm::load("smollm2")?;
    let params = models::generate::GenParams { max_tokens: 16, temperature: 0.0, seed: 0, stop_ids: llm.stop_ids() };
    for out in llm.generate(&[prompt.as_str()], false, &params)? {
        println!("{}{}", prompt, out.text);
    }
    Ok(())
}
