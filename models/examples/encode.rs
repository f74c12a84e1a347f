//! Prints the token ids of each argument as JSON (for golden-file scripts):
//! `cargo run -p models --example encode -- smollm2 "text" ...`.

fn main() -> Result<(), models::LlmError> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "smollm2".into());
    let llm = models::Llm::load(&model)?;
    let ids: Vec<Vec<u32>> = args.map(|t| llm.tokenizer.encode(&t, true)).collect::<Result<_, _>>()?;
    println!("{}", serde_json::to_string(&ids).expect("ids serialise"));
    Ok(())
}
