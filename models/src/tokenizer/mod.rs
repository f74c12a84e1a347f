//! Tokenizers and chat templates.
//!
//! [`Tokenizer`] wraps a Hugging Face `tokenizers` tokenizer (crates.io `tokenizers`, built
//! with `fancy-regex` rather than oniguruma) and adds what the engine needs around it: BOS/EOS
//! ids and the set of stop ids, range-checked decoding, the chat template, and incremental
//! detokenisation ([`StreamDecoder`]).
//!
//! Two ways in:
//! - [`Tokenizer::from_file`]: an HF `tokenizer.json` (with `tokenizer_config.json` /
//!   `generation_config.json` beside it read for BOS/EOS and the chat template, when present);
//! - [`tokenizer_from_gguf`]: the `tokenizer.ggml.*` fields of a GGUF file as plain data
//!   ([`GgufTokenizerSpec`]), rebuilt as a byte-level BPE with llama.cpp's pre-tokenizer split
//!   for the file's `tokenizer.ggml.pre` (see [`gguf`]).
//!
//! Chat templates (HF Jinja templates, rendered sandboxed with minijinja) are in [`chat`].

pub mod chat;
pub mod gguf;
pub mod hf;
pub mod stream;

use std::path::PathBuf;

pub use chat::{ChatMessage, render_chat};
pub use gguf::{GgufTokenizerSpec, tokenizer_from_gguf};
pub use stream::StreamDecoder;

/// Everything that can go wrong building a tokenizer, encoding, decoding or rendering a chat.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a tokenizer kind we do not rebuild (e.g. "llama", the
    /// sentencepiece kind).
    #[error("unsupported tokenizer model {0:?}: only \"gpt2\" (byte-level BPE) is supported")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer we have no split regex for.
    #[error("unknown pre-tokenizer type {0:?} (tokenizer.ggml.pre)")]
    UnknownPre(String),
    /// The spec is inconsistent (lengths, ids out of range, malformed merges).
    #[error("invalid tokenizer spec: {0}")]
    InvalidSpec(String),
    /// An error from the `tokenizers` crate.
    #[error("tokenizer: {0}")]
    Backend(String),
    /// `decode` got an id the vocabulary does not have.
    #[error("token id {id} out of range (vocabulary size {vocab_size})")]
    IdOutOfRange { id: u32, vocab_size: usize },
    /// Reading a tokenizer file failed.
    #[error("reading {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// The chat template does not compile or failed while rendering.
    #[error("chat template: {0}")]
    Template(String),
    /// The chat template called `raise_exception(message)`.
    #[error("chat template raised an exception: {0}")]
    TemplateRaised(String),
    /// The rendered chat would exceed the output limit.
    #[error("chat template output exceeds {limit} bytes")]
    TemplateOutputTooLarge { limit: usize },
}

/// Result with a [`TokenizerError`].
pub type Result<T> = std::result::Result<T, TokenizerError>;

pub(crate) fn backend(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Backend(e.to_string())
}

/// Token texts that mark the end of a turn or of generation, in the vocabularies we know
/// (the same list llama.cpp uses to find its end-of-generation set).
pub(crate) const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "<|return|>",
    "<|call|>",
];

/// A tokenizer with its special ids and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    stop_ids: Vec<u32>,
    chat_template: Option<String>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("stop_ids", &self.stop_ids)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Wraps a `tokenizers` tokenizer. `add_special` in [`encode`](Self::encode) runs the
    /// tokenizer's own post-processor (which is where a BOS gets added). The stop ids are the
    /// EOS plus every added token whose text is a known end-of-turn marker (`<|im_end|>`,
    /// `<|eot_id|>`, `<|endoftext|>`, ...), plus `extra_stop_ids`.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        extra_stop_ids: &[u32],
        chat_template: Option<String>,
    ) -> Self {
        let vocab = inner.get_vocab(true);
        let vocab_size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut stop_ids: Vec<u32> = eos_id
            .into_iter()
            .chain(extra_stop_ids.iter().copied())
            .collect();
        for (id, added) in inner.get_added_tokens_decoder() {
            if END_OF_GENERATION_TEXTS.contains(&added.content.as_str()) {
                stop_ids.push(id);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Self {
            inner,
            bos_id,
            eos_id,
            stop_ids,
            chat_template,
            vocab_size,
        }
    }

    /// Loads an HF `tokenizer.json`; see [`hf`] for what else is read beside it.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        hf::from_file(path.as_ref())
    }

    /// Token ids of `text`. Special and added tokens written in the text (`<|im_start|>`) are
    /// matched whole. `add_special` adds what the tokenizer adds around a sequence (BOS for
    /// vocabularies that want one).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, add_special).map_err(backend)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`. With `skip_special`, special (control) tokens are left out; added
    /// non-special (user-defined) tokens are always kept. Invalid UTF-8 (an incomplete
    /// multi-byte character) becomes U+FFFD. Ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizerError::IdOutOfRange {
                id,
                vocab_size: self.vocab_size,
            });
        }
        self.inner.decode(ids, skip_special).map_err(backend)
    }

    /// Number of token ids (largest id + 1, added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Beginning-of-sequence id, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// End-of-sequence id, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Every id that ends generation (sorted, EOS included).
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Whether `id` ends generation.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    /// The text of token `id` as the vocabulary spells it (byte-level form for BPE).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token as the vocabulary spells it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Text of the BOS token (for chat templates), if any.
    pub fn bos_token(&self) -> Option<String> {
        self.bos_id.and_then(|id| self.inner.id_to_token(id))
    }

    /// Text of the EOS token (for chat templates), if any.
    pub fn eos_token(&self) -> Option<String> {
        self.eos_id.and_then(|id| self.inner.id_to_token(id))
    }

    /// The model's chat template (HF Jinja), if it ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Renders `messages` with the model's own chat template and BOS/EOS texts.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            TokenizerError::Template("this tokenizer has no chat template".into())
        })?;
        render_chat(
            template,
            messages,
            add_generation_prompt,
            &self.bos_token().unwrap_or_default(),
            &self.eos_token().unwrap_or_default(),
        )
    }

    /// A fresh incremental detokenizer for one generated sequence.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder {
        StreamDecoder::new(skip_special)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
