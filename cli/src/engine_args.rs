//! The engine flags `serve` and `bench` share, flattened into both commands
//! (`#[command(flatten)]`): the model, the device and the weight format, how many requests run at once,
//! the tokens of one step, the context, the KV cache and beam search's width. One
//! definition, so the two commands cannot drift apart in names, defaults or help.

use crate::generate::{Device, Weights};
use clap::Args;
use models::load::WeightFormat;
use models::LlmConfig;

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// A known model name (smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct), a `.gguf`
    /// file, or a Hugging Face checkpoint directory.
    #[arg(long, default_value = models::fetch::DEFAULT_MODEL)]
    pub model: String,
    /// Where to run: the CPU backend, the GPU, or the GPU when one is usable.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Weight format on the CPU.
    #[arg(long, value_enum, default_value_t = Weights::Native)]
    pub weights: Weights,
    /// Requests running at once (admitted, holding KV blocks).
    #[arg(long, default_value_t = 64)]
    pub max_batch_size: usize,
    /// Tokens computed in one step.
    #[arg(long, default_value_t = 2048)]
    pub max_num_tokens: usize,
    /// Longest sequence (prompt + generated); default the model's context.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Positions per KV-cache block.
    #[arg(long, default_value_t = 32)]
    pub tokens_per_block: usize,
    /// Upper bound on the KV cache, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub kv_cache_mb: u64,
    /// Do not reuse cached prompt prefixes.
    #[arg(long)]
    pub no_kv_reuse: bool,
    /// Widest beam search a request may ask for.
    #[arg(long, default_value_t = 4)]
    pub max_beam_width: usize,
}

impl EngineArgs {
    /// The engine's configuration (`max_queue_size` as given).
    pub fn llm_config(&self, max_queue_size: usize) -> LlmConfig {
        LlmConfig {
            weights: match self.weights {
                Weights::Native => WeightFormat::Native,
                Weights::F32 => WeightFormat::F32,
            },
            max_batch_size: self.max_batch_size,
            max_queue_size,
            max_num_tokens: self.max_num_tokens,
            max_seq_len: self.max_seq_len,
            tokens_per_block: self.tokens_per_block,
            kv_cache_bytes: Some(self.kv_cache_mb << 20),
            enable_kv_cache_reuse: !self.no_kv_reuse,
            max_beam_width: self.max_beam_width,
            device: self.device.into(),
            ..LlmConfig::new(self.model.clone())
        }
    }
}
