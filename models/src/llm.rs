//! The offline API a downstream crate writes against: load a model by name or path, then
//! generate text for a batch of prompts.
//!
//! ```no_run
//! let llm = models::Llm::load("smollm2")?;
//! let params = models::generate::GenParams { max_tokens: 16, temperature: 0.0, seed: 0, stop_ids: llm.stop_ids() };
//! for out in llm.generate(&["The capital of France is"], false, &params)? {
//!     println!("{}", out.text);
//! }
//! # Ok::<(), models::LlmError>(())
//! ```

use crate::arch::Model;
use crate::error::LoadError;
use crate::fetch::FetchError;
use crate::generate::{generate_batch, FinishReason, GenParams};
use crate::load::WeightFormat;
use crate::tokenizer::{ChatMessage, Tokenizer, TokenizerError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// A loaded model with its tokenizer.
pub struct Llm {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub path: PathBuf,
}

/// One prompt's result.
#[derive(Clone, Debug)]
pub struct Completion {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
}

impl Llm {
    /// Loads a model by path or known name (fetching it if needed), weights in their native
    /// block format on the CPU.
    pub fn load(spec: &str) -> Result<Llm, LlmError> {
        Self::load_with(spec, WeightFormat::Native)
    }

    /// As [`Llm::load`] with a chosen weight format.
    pub fn load_with(spec: &str, format: WeightFormat) -> Result<Llm, LlmError> {
        let path = crate::fetch::resolve(spec)?;
        let (model, tokenizer) = crate::load::load_path(&path, format)?;
        Ok(Llm { model, tokenizer, path })
    }

    /// Token ids that end generation (the tokenizer's EOS and end-of-turn tokens).
    pub fn stop_ids(&self) -> Vec<u32> {
        self.tokenizer.stop_ids().to_vec()
    }

    /// The prompt's token ids: with `chat`, the text is one user message rendered with the
    /// model's chat template (with the generation prompt); special tokens in plain prompts
    /// are added as the tokenizer's settings say (e.g. BOS).
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<u32>, LlmError> {
        let ids = if chat {
            let text = self.tokenizer.apply_chat_template(&[ChatMessage::new("user", prompt)], true)?;
            self.tokenizer.encode(&text, false)?
        } else {
            self.tokenizer.encode(prompt, true)?
        };
        if ids.is_empty() {
            return Err(LlmError::Invalid("the prompt is empty (no tokens)".into()));
        }
        let limit = self.model.config().max_position;
        if ids.len() >= limit {
            return Err(LlmError::Invalid(format!("the prompt has {} tokens; the model's context is {limit}", ids.len())));
        }
        Ok(ids)
    }

    /// Generates for every prompt as one batch.
    pub fn generate(&self, prompts: &[&str], chat: bool, params: &GenParams) -> Result<Vec<Completion>, LlmError> {
        params.validate().map_err(LlmError::Invalid)?;
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.prompt_ids(p, chat)).collect::<Result<_, _>>()?;
        let outs = generate_batch(&self.model, &ids, params, |_, _| {});
        outs.into_iter()
            .map(|g| Ok(Completion { text: self.tokenizer.decode(&g.token_ids, true)?, token_ids: g.token_ids, finish_reason: g.finish_reason }))
            .collect()
    }
}
