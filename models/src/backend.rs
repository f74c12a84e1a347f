//! The CPU reference backend for the executor: a [`Model`] over a [`PagedKv`] store whose
//! blocks the scheduler's block pool numbers, plus the host tier's slots (here plain
//! memory too: the tier exists so that the same scheduler drives CPU and GPU).

use crate::arch::{Model, PagedKv, SeqInput};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use host_runtime::executor::{Backend, BackendError, BackendItem, Detokenizer, TextStream};
use host_runtime::kv::BlockId;
use std::sync::Arc;

/// Bytes of KV storage per token for `model` on the CPU (f32 K and V, every layer).
pub fn cpu_kv_bytes_per_token(model: &Model) -> u64 {
    let c = model.config();
    (c.layers * 2 * c.kv_heads * c.head_dim * 4) as u64
}

/// The CPU backend.
pub struct CpuBackend {
    model: Arc<Model>,
    kv: PagedKv,
    host: Vec<Vec<f32>>,
}

impl CpuBackend {
    /// Allocates `num_blocks` KV blocks of `tokens_per_block` and `host_blocks` host slots.
    pub fn new(model: Arc<Model>, num_blocks: usize, tokens_per_block: usize, host_blocks: usize) -> Self {
        host_runtime::cpu::keep_large_allocations_in_heap();
        let c = model.config();
        let kv = PagedKv::new(num_blocks, tokens_per_block, c.layers, c.kv_heads * c.head_dim);
        CpuBackend { model, kv, host: vec![Vec::new(); host_blocks] }
    }

    fn check_item(&self, it: &BackendItem) -> Result<(), BackendError> {
        let need = (it.start_pos + it.tokens.len()).div_ceil(self.kv.tokens_per_block);
        if it.block_table.len() < need {
            return Err(BackendError(format!("block table of {} blocks for {} positions", it.block_table.len(), it.start_pos + it.tokens.len())));
        }
        if let Some(&b) = it.block_table[..need].iter().find(|&&b| b as usize >= self.kv.blocks) {
            return Err(BackendError(format!("block {b} is outside the {} allocated", self.kv.blocks)));
        }
        let vocab = self.model.config().vocab_size;
        if let Some(&t) = it.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(BackendError(format!("token id {t} is outside the vocabulary ({vocab})")));
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn step(&mut self, items: &[BackendItem]) -> Result<Vec<Vec<f32>>, BackendError> {
        for it in items {
            self.check_item(it)?;
        }
        let inputs: Vec<SeqInput> = items.iter().map(|it| SeqInput { tokens: it.tokens, start: it.start_pos }).collect();
        let tables: Vec<&[BlockId]> = items.iter().map(|it| it.block_table).collect();
        let logits = self.model.forward_kv(&inputs, &mut self.kv.view(tables), false);
        Ok(logits.into_iter().zip(items).filter(|(_, it)| it.needs_logits).map(|(l, _)| l).collect())
    }

    fn swap_out(&mut self, block: BlockId, slot: usize) -> Result<(), BackendError> {
        let dst = self.host.get_mut(slot).ok_or_else(|| BackendError(format!("host slot {slot} out of range")))?;
        dst.clear();
        dst.extend_from_slice(self.kv.block(block));
        Ok(())
    }

    fn swap_in(&mut self, slot: usize, block: BlockId) -> Result<(), BackendError> {
        let src = self.host.get(slot).ok_or_else(|| BackendError(format!("host slot {slot} out of range")))?;
        if src.len() != self.kv.block_len() {
            return Err(BackendError(format!("host slot {slot} holds no block")));
        }
        self.kv.block_mut(block).copy_from_slice(src);
        Ok(())
    }

    fn copy_block(&mut self, src: BlockId, dst: BlockId) -> Result<(), BackendError> {
        if let Some(&b) = [src, dst].iter().find(|&&b| b as usize >= self.kv.blocks) {
            return Err(BackendError(format!("block copy {src} -> {dst}: block {b} is outside the {} allocated", self.kv.blocks)));
        }
        self.kv.copy_block(src, dst);
        Ok(())
    }
}

/// Text deltas through the model's tokenizer (special tokens skipped).
pub struct TokenizerDetok(pub Arc<Tokenizer>);

struct TokStream {
    tok: Arc<Tokenizer>,
    dec: StreamDecoder,
}

impl TextStream for TokStream {
    fn push(&mut self, id: u32) -> String {
        self.dec.push(&self.tok, id).ok().flatten().unwrap_or_default()
    }

    fn finish(&mut self) -> String {
        self.dec.finish(&self.tok).unwrap_or_default()
    }
}

impl Detokenizer for TokenizerDetok {
    fn stream(&self) -> Box<dyn TextStream> {
        Box::new(TokStream { tok: self.0.clone(), dec: StreamDecoder::new(true) })
    }
}
