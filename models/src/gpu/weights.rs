//! Model weights on the GPU, bf16: per layer the norms, the fused Q/K/V weight
//! `[q + 2·kv, hidden]` (+ fused bias for Qwen2), the output projection, the fused gate/up
//! weight `[2·inter, hidden]` (gate rows, then up rows) and the down projection; the
//! embedding, the final norm, the LM head (or the tied embedding) and the RoPE frequencies.
//! [`GpuWeights::upload`] converts a loaded CPU [`Model`] layer by layer.

use super::pack::{bias_bf16, fuse_bias, fuse_rows, linear_f32, to_bf16};
use super::GpuError;
use crate::arch::{LlamaLayer, LlamaModel, Model};
use crate::config::{Arch, ModelConfig, Positions};
use half::bf16;
use host_runtime::{DeviceBuffer, Gpu};

/// One transformer block on the device.
pub struct GpuLayer {
    /// `[hidden]`.
    pub attn_norm: DeviceBuffer<bf16>,
    /// `[q + 2·kv, hidden]`: Q rows, then K rows, then V rows.
    pub qkv: DeviceBuffer<bf16>,
    /// `[q + 2·kv]` when the model has Q/K/V biases.
    pub qkv_bias: Option<DeviceBuffer<bf16>>,
    /// `[hidden, q]`.
    pub o: DeviceBuffer<bf16>,
    pub o_bias: Option<DeviceBuffer<bf16>>,
    /// `[hidden]`.
    pub ffn_norm: DeviceBuffer<bf16>,
    /// `[2·inter, hidden]`: gate rows, then up rows.
    pub gate_up: DeviceBuffer<bf16>,
    /// `[hidden, inter]`.
    pub down: DeviceBuffer<bf16>,
    pub down_bias: Option<DeviceBuffer<bf16>>,
}

/// A whole model on the device.
pub struct GpuWeights {
    pub config: ModelConfig,
    /// `[vocab, hidden]`.
    pub embed: DeviceBuffer<bf16>,
    pub layers: Vec<GpuLayer>,
    /// `[hidden]`.
    pub final_norm: DeviceBuffer<bf16>,
    /// `[vocab, hidden]`; `None` when tied to the embedding.
    pub lm_head: Option<DeviceBuffer<bf16>>,
    /// RoPE inverse frequencies (`head_dim / 2`, Llama 3.1 scaling applied).
    pub inv_freq: DeviceBuffer<f32>,
}

/// Checks that the GPU forward pass runs this configuration.
pub fn check_supported(c: &ModelConfig) -> Result<(), GpuError> {
    c.validate().map_err(GpuError::Invalid)?;
    if !matches!(c.arch, Arch::Llama | Arch::Qwen2) || c.positions != Positions::Rope {
        return Err(GpuError::Unsupported(format!("{} models run on the CPU backend only (the GPU runs the LLaMA family and Qwen2)", c.arch)));
    }
    if !matches!(c.head_dim, 64 | 128) {
        return Err(GpuError::Unsupported(format!("head_dim {}: the attention kernels are built for 64 and 128", c.head_dim)));
    }
    Ok(())
}

impl GpuWeights {
    /// Uploads a loaded model as bf16 (any CPU weight format; GPT-2 is refused).
    pub fn upload(gpu: &Gpu, model: &Model) -> Result<Self, GpuError> {
        match model {
            Model::Llama(m) => Self::upload_llama(gpu, m),
            Model::Gpt2(_) => Err(GpuError::Unsupported("GPT-2 runs on the CPU backend only; use --device cpu".into())),
        }
    }

    fn upload_llama(gpu: &Gpu, m: &LlamaModel) -> Result<Self, GpuError> {
        let c = &m.config;
        check_supported(c)?;
        let layers = m.layers.iter().map(|l| upload_layer(gpu, l)).collect::<Result<Vec<_>, _>>()?;
        let lm_head = match &m.lm_head {
            Some(h) => Some(gpu.upload(&to_bf16(&linear_f32(h)?))?),
            None => None,
        };
        Ok(GpuWeights {
            config: c.clone(),
            embed: gpu.upload(&to_bf16(&m.embed))?,
            layers,
            final_norm: gpu.upload(&to_bf16(&m.final_norm))?,
            lm_head,
            inv_freq: gpu.upload(&c.rope_inv_freq())?,
        })
    }

    /// The `[vocab, hidden]` LM head weight (the embedding when tied).
    pub fn lm_head(&self) -> &DeviceBuffer<bf16> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Device bytes the weights take.
    pub fn bytes(&self) -> u64 {
        let opt = |b: &Option<DeviceBuffer<bf16>>| b.as_ref().map_or(0, |b| b.len());
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| l.attn_norm.len() + l.qkv.len() + opt(&l.qkv_bias) + l.o.len() + opt(&l.o_bias) + l.ffn_norm.len() + l.gate_up.len() + l.down.len() + opt(&l.down_bias))
            .sum();
        ((per_layer + self.embed.len() + self.final_norm.len() + opt(&self.lm_head)) * 2 + self.inv_freq.len() * 4) as u64
    }
}

/// Fuses and uploads one layer (its f32 copies live only inside this call).
fn upload_layer(gpu: &Gpu, l: &LlamaLayer) -> Result<GpuLayer, GpuError> {
    if l.gate.bias.is_some() || l.up.bias.is_some() {
        return Err(GpuError::Unsupported("biases on the gate/up projections".into()));
    }
    let opt = |b: Option<Vec<bf16>>| b.map(|b| gpu.upload(&b)).transpose();
    Ok(GpuLayer {
        attn_norm: gpu.upload(&to_bf16(&l.attn_norm))?,
        qkv: gpu.upload(&fuse_rows(&[&l.q, &l.k, &l.v])?)?,
        qkv_bias: opt(fuse_bias(&[&l.q, &l.k, &l.v]))?,
        o: gpu.upload(&fuse_rows(&[&l.o])?)?,
        o_bias: opt(bias_bf16(&l.o))?,
        ffn_norm: gpu.upload(&to_bf16(&l.ffn_norm))?,
        gate_up: gpu.upload(&fuse_rows(&[&l.gate, &l.up])?)?,
        down: gpu.upload(&fuse_rows(&[&l.down])?)?,
        down_bias: opt(bias_bf16(&l.down))?,
    })
}
