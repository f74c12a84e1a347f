//! Loading a Hugging Face `tokenizer.json`, with the special ids and chat template that HF keeps
//! in other files.
//!
//! Beside `tokenizer.json`, when present:
//! - `tokenizer_config.json`: `bos_token` / `eos_token` (a string or `{"content": ..}`) and
//!   `chat_template` (a string, or a list of `{name, template}` of which "default" is taken);
//! - `generation_config.json`: `eos_token_id` (a number or a list), added to the stop ids;
//! - `chat_template.jinja`: the chat template, in newer repositories.
//!
//! Without a config, BOS/EOS are guessed from well-known added tokens (`<|begin_of_text|>`,
//! `<s>`, `<|im_end|>`, `</s>`, ...). BOS insertion itself is the tokenizer's post-processor.

use std::path::Path;

use serde_json::Value;

use super::{Result, Tokenizer, TokenizerError};

const BOS_GUESSES: &[&str] = &["<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"];
const EOS_GUESSES: &[&str] = &[
    "<|end_of_text|>",
    "</s>",
    "<eos>",
    "<|endoftext|>",
    "<|im_end|>",
];

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| TokenizerError::Io {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TokenizerError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn chat_template_of(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            };
            let t = named("default").or_else(|| list.first())?;
            t.get("template")
                .and_then(Value::as_str)
                .map(str::to_string)
        }
        _ => None,
    }
}

/// See the module docs.
pub fn from_file(path: &Path) -> Result<Tokenizer> {
    let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let config = read_json(&dir.join("tokenizer_config.json"))?;
    let generation = read_json(&dir.join("generation_config.json"))?;

    let id_of = |text: Option<String>| text.and_then(|t| inner.token_to_id(&t));
    let guess = |list: &[&str]| list.iter().find_map(|t| inner.token_to_id(t));
    let cfg = config.as_ref();
    let bos_id =
        id_of(cfg.and_then(|c| token_text(c.get("bos_token")))).or_else(|| guess(BOS_GUESSES));
    let eos_id =
        id_of(cfg.and_then(|c| token_text(c.get("eos_token")))).or_else(|| guess(EOS_GUESSES));

    let mut extra_stops = Vec::new();
    match generation.as_ref().and_then(|g| g.get("eos_token_id")) {
        Some(Value::Number(n)) => extra_stops.extend(n.as_u64().map(|n| n as u32)),
        Some(Value::Array(a)) => {
            extra_stops.extend(a.iter().filter_map(Value::as_u64).map(|n| n as u32))
        }
        _ => {}
    }

    let mut chat_template = cfg.and_then(chat_template_of);
    if chat_template.is_none() {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            chat_template =
                Some(
                    std::fs::read_to_string(&jinja).map_err(|e| TokenizerError::Io {
                        path: jinja.clone(),
                        message: e.to_string(),
                    })?,
                );
        }
    }
    Ok(Tokenizer::from_parts(
        inner,
        bos_id,
        eos_id,
        &extra_stops,
        chat_template,
    ))
}
