//! A Hugging Face GPT-2 checkpoint (`GPT2LMHeadModel`) → [`Gpt2Model`]. Its linear layers
//! are `Conv1D`, stored `[in, out]`: they are transposed to our `[out, in]` here. Tensor
//! names are `transformer.*`, or the same without the prefix (a bare `GPT2Model` save).

use super::SafetensorsDir;
use crate::arch::{Gpt2Layer, Gpt2Model, LayerNorm, Linear};
use crate::config::ModelConfig;
use crate::error::LoadError;

/// Reads tensors of one checkpoint under its name prefix.
struct Reader<'a> {
    st: &'a SafetensorsDir,
    prefix: &'static str,
}

impl Reader<'_> {
    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        self.st.tensor_f32(&self.name(name), shape)
    }

    fn layer_norm(&self, name: &str, hidden: usize) -> Result<LayerNorm, LoadError> {
        Ok(LayerNorm { weight: self.tensor(&format!("{name}.weight"), &[hidden])?, bias: self.tensor(&format!("{name}.bias"), &[hidden])? })
    }

    /// A `Conv1D` (`weight` `[inp, out]`, `bias` `[out]`) as a `[out, inp]` linear layer.
    fn conv1d(&self, name: &str, inp: usize, out: usize) -> Result<Linear, LoadError> {
        let w = self.tensor(&format!("{name}.weight"), &[inp, out])?;
        let b = self.tensor(&format!("{name}.bias"), &[out])?;
        Ok(Linear::new(out, inp, transpose(&w, inp, out), Some(b)))
    }
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            out[c * rows + r] = x;
        }
    }
    out
}

/// Builds the model from the checkpoint's tensors, each checked against `config`.
pub(super) fn build_gpt2(config: ModelConfig, st: &SafetensorsDir) -> Result<Gpt2Model, LoadError> {
    let prefix = if st.contains("transformer.wte.weight") { "transformer." } else { "" };
    let r = Reader { st, prefix };
    let (h, ff) = (config.hidden, config.intermediate);
    let mut layers = Vec::with_capacity(config.layers);
    for i in 0..config.layers {
        let p = format!("h.{i}");
        layers.push(Gpt2Layer {
            ln_1: r.layer_norm(&format!("{p}.ln_1"), h)?,
            qkv: r.conv1d(&format!("{p}.attn.c_attn"), h, 3 * h)?,
            attn_out: r.conv1d(&format!("{p}.attn.c_proj"), h, h)?,
            ln_2: r.layer_norm(&format!("{p}.ln_2"), h)?,
            fc: r.conv1d(&format!("{p}.mlp.c_fc"), h, ff)?,
            proj: r.conv1d(&format!("{p}.mlp.c_proj"), ff, h)?,
        });
    }
    let lm_head = if config.tied_embeddings { None } else { Some(Linear::new(config.vocab_size, h, st.tensor_f32("lm_head.weight", &[config.vocab_size, h])?, None)) };
    Ok(Gpt2Model {
        wte: r.tensor("wte.weight", &[config.vocab_size, h])?,
        wpe: r.tensor("wpe.weight", &[config.max_position, h])?,
        layers,
        ln_f: r.layer_norm("ln_f", h)?,
        lm_head,
        config,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(super::transpose(&[1., 2., 3., 4., 5., 6.], 2, 3), vec![1., 4., 2., 5., 3., 6.]);
    }
}
