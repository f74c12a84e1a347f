//! The offline API a downstream crate writes against: config → init → generate. Requests
//! go through the in-flight batching executor (scheduler, paged KV cache, full sampling set)
//! on the CPU reference backend or the GPU backend ([`Device`]); [`SyntheticEngine`] is the
//! GPU executor over random weights of a named architecture, for benchmarks.
//!
//! ```no_run
//! use models::{Llm, LlmConfig};
//! use host_runtime::sampling::SamplingParams;
//! let llm = Llm::new(LlmConfig::new("smollm2"))?;
//! let sampling = SamplingParams { temperature: 0.0, max_new_tokens: 16, ..Default::default() };
//! for out in llm.generate(&["The capital of France is"], &sampling)? {
//!     println!("{}", out.text);
//! }
//! # Ok::<(), models::LlmError>(())
//! ```

use crate::arch::Model;
use crate::backend::{cpu_kv_bytes_per_token, CpuBackend, TokenizerDetok};
use crate::error::LoadError;
use crate::fetch::FetchError;
use crate::load::WeightFormat;
use crate::tokenizer::{ChatMessage, Tokenizer, TokenizerError};
use crate::config::ModelConfig;
use crate::gpu::{size_backend, GpuBackend, GpuError, GpuSizing, GpuWeights};
use host_runtime::executor::{Backend, Detokenizer, Executor, ExecutorConfig, ExecutorError, FinishReason, Handle, NoText, Request, TokenLogprobs};
use host_runtime::Gpu;
use host_runtime::kv::{size_kv_cache, KvCacheConfig, KvSizing};
use host_runtime::sampling::SamplingParams;
use host_runtime::scheduler::{CapacityPolicy, SchedulerConfig};
use std::path::PathBuf;
use std::sync::Arc;

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
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    #[error("KV cache: {0}")]
    KvCache(String),
    /// (Not a `#[source]`: the message already holds the cause, and error reports that
    /// print the chain would say it twice.)
    #[error("GPU: {0}")]
    Gpu(GpuError),
}

impl From<GpuError> for LlmError {
    fn from(e: GpuError) -> Self {
        LlmError::Gpu(e)
    }
}

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The CPU reference backend.
    #[default]
    Cpu,
    /// The first CUDA GPU; an error when there is none or the model cannot run there.
    Cuda,
    /// The GPU when one is usable and runs the model, else the CPU.
    Auto,
}

/// Everything needed to start an engine. `LlmConfig::new(model)` gives the defaults.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// A known model name, a `.gguf` file or a Hugging Face directory.
    pub model: String,
    pub weights: WeightFormat,
    /// Positions per KV block (8..=128, a power of two).
    pub tokens_per_block: usize,
    /// Fraction of the memory available after loading that the KV cache may take.
    pub kv_cache_fraction: f32,
    /// Upper bound on KV cache bytes.
    pub kv_cache_bytes: Option<u64>,
    /// Reuse cached prompt prefixes (`enable_kv_cache_reuse`).
    pub enable_kv_cache_reuse: bool,
    /// Bytes of host memory for evicted reusable blocks (`kv_host_cache_bytes`).
    pub kv_host_cache_bytes: u64,
    pub max_batch_size: usize,
    pub max_num_tokens: usize,
    pub max_queue_size: usize,
    /// Longest sequence (prompt + generated); default the model's context.
    pub max_seq_len: Option<usize>,
    pub policy: CapacityPolicy,
    pub chunked_context: bool,
    pub max_beam_width: usize,
    pub device: Device,
}

impl LlmConfig {
    pub fn new(model: impl Into<String>) -> Self {
        LlmConfig {
            model: model.into(),
            weights: WeightFormat::Native,
            tokens_per_block: 32,
            kv_cache_fraction: 0.25,
            kv_cache_bytes: Some(4 << 30),
            enable_kv_cache_reuse: true,
            kv_host_cache_bytes: 0,
            max_batch_size: 64,
            max_num_tokens: 2048,
            max_queue_size: 1024,
            max_seq_len: None,
            policy: CapacityPolicy::GuaranteedNoEvict,
            chunked_context: true,
            max_beam_width: 4,
            device: Device::Cpu,
        }
    }
}

/// A loaded model with its tokenizer and a running executor.
pub struct Llm {
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
    pub path: PathBuf,
    pub config: LlmConfig,
    /// Where it runs: `cpu` or `cuda:<ordinal> (<name>)`.
    pub device: String,
    executor: Executor,
}

/// One prompt's result.
#[derive(Clone, Debug)]
pub struct Completion {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub logprobs: Vec<TokenLogprobs>,
    pub cum_logprob: f32,
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    /// Beam search: the `n` best hypotheses, best first (the first is `text` / `token_ids`).
    pub beams: Vec<host_runtime::executor::BeamOutput>,
}

impl Llm {
    /// Loads a model by path or known name (fetching it if needed) with default settings.
    pub fn load(spec: &str) -> Result<Llm, LlmError> {
        Self::new(LlmConfig::new(spec))
    }

    /// As [`Llm::load`] with a chosen weight format.
    pub fn load_with(spec: &str, weights: WeightFormat) -> Result<Llm, LlmError> {
        Self::new(LlmConfig { weights, ..LlmConfig::new(spec) })
    }

    /// Loads the model, sizes the KV cache from available memory (host or device) and
    /// starts the executor on the configured [`Device`].
    pub fn new(config: LlmConfig) -> Result<Llm, LlmError> {
        let path = crate::fetch::resolve(&config.model)?;
        let (model, tokenizer) = crate::load::load_path(&path, config.weights)?;
        let model = Arc::new(model);
        let tokenizer = Arc::new(tokenizer);
        let max_seq_len = config.max_seq_len.unwrap_or(model.config().max_position).min(model.config().max_position);
        let mut device = "cpu".to_string();
        let (backend, kv) = match pick_gpu(config.device)? {
            Some(gpu) => match GpuWeights::upload(&gpu, &model) {
                Ok(weights) => {
                    device = format!("cuda:{} ({})", gpu.info().ordinal, gpu.info().name);
                    gpu_backend(gpu, weights, &config, max_seq_len)?
                }
                Err(e @ GpuError::Unsupported(_)) if config.device == Device::Auto => {
                    eprintln!("inflight: {e}; running on the CPU");
                    cpu_backend(&model, &config, max_seq_len)?
                }
                Err(e) => return Err(e.into()),
            },
            None => cpu_backend(&model, &config, max_seq_len)?,
        };
        let detok = Arc::new(TokenizerDetok(tokenizer.clone()));
        let executor = start_executor(&config, max_seq_len, backend, kv, tokenizer.stop_ids().to_vec(), detok)?;
        Ok(Llm { model, tokenizer, path, config, device, executor })
    }

    /// The executor (submit, cancel, stats).
    pub fn executor(&self) -> &Executor {
        &self.executor
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

    /// Submits one tokenized prompt; outputs stream on the handle.
    pub fn submit(&self, prompt: Vec<u32>, sampling: &SamplingParams) -> Result<Handle, LlmError> {
        Ok(self.executor.submit(Request { prompt, sampling: sampling.clone() })?)
    }

    /// Generates for every prompt, all in flight together.
    pub fn generate<S: AsRef<str>>(&self, prompts: &[S], sampling: &SamplingParams) -> Result<Vec<Completion>, LlmError> {
        self.run(prompts, false, sampling)
    }

    /// As [`Llm::generate`], each prompt sent as a user message through the chat template.
    pub fn chat<S: AsRef<str>>(&self, prompts: &[S], sampling: &SamplingParams) -> Result<Vec<Completion>, LlmError> {
        self.run(prompts, true, sampling)
    }

    fn run<S: AsRef<str>>(&self, prompts: &[S], chat: bool, sampling: &SamplingParams) -> Result<Vec<Completion>, LlmError> {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| self.prompt_ids(p.as_ref(), chat)).collect::<Result<_, _>>()?;
        let mut handles = Vec::with_capacity(ids.len());
        for p in ids {
            match self.submit(p, sampling) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    for h in &handles {
                        self.executor.cancel(h.id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(handles.into_iter().map(|h| completion(h.wait())).collect())
    }
}

fn completion(o: host_runtime::executor::Output) -> Completion {
    Completion {
        text: o.text,
        token_ids: o.token_ids,
        finish_reason: o.finish.unwrap_or(FinishReason::Error("no final output".into())),
        logprobs: o.logprobs,
        cum_logprob: o.cum_logprob,
        prompt_tokens: o.prompt_tokens,
        reused_tokens: o.reused_tokens,
        beams: o.beams,
    }
}

/// Memory the KV cache may draw from on the CPU: `MemAvailable` (Linux), else 4 GiB.
/// The GPU `device` asks for: none for the CPU; the first GPU for `Cuda` (an error naming
/// why when there is none); for `Auto` the first GPU if one opens.
fn pick_gpu(device: Device) -> Result<Option<Arc<Gpu>>, LlmError> {
    match device {
        Device::Cpu => Ok(None),
        Device::Cuda => Gpu::new(0).map(|g| Some(Arc::new(g))).map_err(|e| LlmError::Gpu(GpuError::Device(e))),
        Device::Auto => match host_runtime::device::device_count() {
            Ok(n) if n > 0 => match Gpu::new(0) {
                Ok(g) => Ok(Some(Arc::new(g))),
                Err(e) => {
                    eprintln!("inflight: the GPU is not usable ({e}); running on the CPU");
                    Ok(None)
                }
            },
            _ => Ok(None),
        },
    }
}

/// The CPU backend, its KV cache sized from the host's available memory.
fn cpu_backend(model: &Arc<Model>, config: &LlmConfig, max_seq_len: usize) -> Result<(Box<dyn Backend>, KvCacheConfig), LlmError> {
    let bytes_per_token = cpu_kv_bytes_per_token(model);
    let sizing = KvSizing { bytes_per_token, tokens_per_block: config.tokens_per_block, max_seq_len };
    let num_blocks = size_kv_cache(&sizing, available_memory(), Some(config.kv_cache_fraction), config.kv_cache_bytes).map_err(|e| LlmError::KvCache(e.to_string()))?;
    let block_bytes = bytes_per_token * config.tokens_per_block as u64;
    let host_cache_blocks = (config.kv_host_cache_bytes / block_bytes.max(1)) as usize;
    let kv = KvCacheConfig { tokens_per_block: config.tokens_per_block, num_blocks, enable_reuse: config.enable_kv_cache_reuse, host_cache_blocks };
    let backend = CpuBackend::new(model.clone(), num_blocks, config.tokens_per_block, host_cache_blocks);
    Ok((Box::new(backend), kv))
}

/// The GPU backend over uploaded `weights`, its KV cache sized from the device memory left
/// (the GPU's own fraction, 0.9 of what is free, capped by `kv_cache_bytes`).
fn gpu_backend(gpu: Arc<Gpu>, weights: GpuWeights, config: &LlmConfig, max_seq_len: usize) -> Result<(Box<dyn Backend>, KvCacheConfig), LlmError> {
    let sizing = GpuSizing {
        tokens_per_block: config.tokens_per_block,
        max_batch_size: config.max_batch_size,
        max_num_tokens: config.max_num_tokens,
        cap_bytes: config.kv_cache_bytes,
        host_cache_bytes: config.kv_host_cache_bytes,
        ..GpuSizing::new(max_seq_len)
    };
    let cfg = size_backend(&gpu, &weights, &sizing)?;
    let kv = KvCacheConfig { tokens_per_block: cfg.tokens_per_block, num_blocks: cfg.num_blocks, enable_reuse: config.enable_kv_cache_reuse, host_cache_blocks: cfg.host_blocks };
    Ok((Box::new(GpuBackend::new(gpu, weights, cfg)?), kv))
}

/// The executor over `backend` with the scheduler settings of `config`.
fn start_executor(config: &LlmConfig, max_seq_len: usize, backend: Box<dyn Backend>, kv: KvCacheConfig, end_ids: Vec<u32>, detok: Arc<dyn Detokenizer>) -> Result<Executor, LlmError> {
    let scheduler = SchedulerConfig {
        max_batch_size: config.max_batch_size,
        max_num_tokens: config.max_num_tokens,
        max_queue_size: config.max_queue_size,
        max_seq_len,
        policy: config.policy,
        chunked_context: config.chunked_context,
    };
    let exec_cfg = ExecutorConfig { scheduler, kv, max_beam_width: config.max_beam_width, end_ids };
    Ok(Executor::new(exec_cfg, backend, detok)?)
}

/// The GPU executor over random weights of a named architecture (`llama-3.1-8b`, …): the
/// synthetic mode for performance work, no files. Token ids only (no tokenizer, no text).
pub struct SyntheticEngine {
    pub model_config: ModelConfig,
    executor: Executor,
}

impl SyntheticEngine {
    /// Random weights for `arch` generated on the first GPU; `config.model` is ignored.
    pub fn new(arch: &str, config: &LlmConfig, seed: u64) -> Result<SyntheticEngine, LlmError> {
        let model_config = ModelConfig::named(arch).ok_or_else(|| LlmError::Invalid(format!("--synthetic {arch}: unknown architecture (known: {})", crate::config::NAMED_CONFIGS.join(", "))))?;
        let gpu = pick_gpu(Device::Cuda)?.expect("Cuda gives a GPU or an error");
        let weights = GpuWeights::synthetic(&gpu, &model_config, seed)?;
        let max_seq_len = config.max_seq_len.unwrap_or(model_config.max_position).min(model_config.max_position);
        let (backend, kv) = gpu_backend(gpu, weights, config, max_seq_len)?;
        let executor = start_executor(config, max_seq_len, backend, kv, Vec::new(), Arc::new(NoText))?;
        Ok(SyntheticEngine { model_config, executor })
    }

    pub fn executor(&self) -> &Executor {
        &self.executor
    }
}

fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30)
}
