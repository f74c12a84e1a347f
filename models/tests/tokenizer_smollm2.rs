//! SmolLM2-135M-Instruct's real tokenizer against golden ids from Hugging Face tooling
//! (`models/testdata/make_tokenizer_golden.py`: transformers' GGUF tokenizer converter with
//! SmolLM2's original pre-tokenizer, HF `tokenizers` in Python).
//!
//! The tokenizer fields are read from the model's GGUF by our own reader, in the model cache
//! (`$INFLIGHT_MODELS_DIR`, default `~/.cache/inflight/models`; CI fetches the model first
//! with `inflight generate`); without it the test prints "skipped: SmolLM2 not downloaded".

use std::path::PathBuf;

use models::tokenizer::{ChatMessage, GgufTokenizerSpec, StreamDecoder, tokenizer_from_gguf};
use serde_json::Value;

fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INFLIGHT_MODELS_DIR") {
        return PathBuf::from(d);
    }
    models::fetch::cache_dir().join("models")
}

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/smollm2_tokenizer_golden.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn spec() -> Option<GgufTokenizerSpec> {
    let path = models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        return None;
    }
    let file = models::gguf::GgufFile::open(&path).expect("opening the SmolLM2 GGUF");
    Some(models::load::gguf::tokenizer_spec(&file).expect("tokenizer fields of the GGUF"))
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_matches_golden_ids() {
    let Some(spec) = spec() else {
        println!("skipped: SmolLM2 not downloaded (run `cargo run --release -- generate --prompt hi`)");
        return;
    };
    let g = golden();
    assert_eq!(spec.pre.as_deref(), Some("smollm"));
    let tok = tokenizer_from_gguf(&spec).unwrap();
    assert_eq!(tok.vocab_size() as u64, g["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.bos_id().map(u64::from), g["bos_id"].as_u64());
    assert_eq!(tok.eos_id().map(u64::from), g["eos_id"].as_u64());
    assert!(tok.is_stop(2), "<|im_end|> ends generation");

    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let got = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
            continue;
        }
        // add_bos is false for SmolLM2: add_special changes nothing.
        assert_eq!(tok.encode(text, true).unwrap(), want);
        assert_eq!(tok.decode(&got, false).unwrap(), text, "round trip");
        let mut dec = StreamDecoder::new(false);
        let streamed = dec.push_all(&tok, &got).unwrap() + &dec.finish(&tok).unwrap();
        assert_eq!(streamed, text, "stream decode");
    }
    assert!(
        failures.is_empty(),
        "{} of {} texts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_chat_template_matches_jinja2() {
    // The template and the renderings are in the committed golden file: no download needed.
    let g = golden();
    let bos = g["bos_token"].as_str().unwrap();
    let eos = g["eos_token"].as_str().unwrap();
    let template = match spec() {
        Some(s) => {
            let t = s.chat_template.expect("SmolLM2 ships a chat template");
            assert_eq!(t, SMOLLM2_TEMPLATE, "the copy below is the file's template");
            t
        }
        None => SMOLLM2_TEMPLATE.to_string(),
    };
    for chat in g["chats"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(chat["messages"].clone()).unwrap();
        let add = chat["add_generation_prompt"].as_bool().unwrap();
        let got = models::tokenizer::render_chat(&template, &messages, add, bos, eos).unwrap();
        assert_eq!(got, chat["rendered"].as_str().unwrap());
    }
}

/// SmolLM2-135M-Instruct's `tokenizer.chat_template` (ChatML with a default system prompt).
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
