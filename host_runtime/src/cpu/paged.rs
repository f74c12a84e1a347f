//! Paged KV cache reference: one layer's K and V pools in plain `Vec`s with the layout of
//! `kernel_abi::paged`, the `kv_append` rule, and decode attention read through the block
//! table (f64 accumulation). Invalid ids are treated as the kernels treat them (see
//! `kernel_abi::paged`, "Invalid input").

use rayon::prelude::*;

/// K and V pools in host memory, `[block][kv_head][slot][head_dim]` each.
#[derive(Clone, Debug)]
pub struct PagedKvStore {
    pub num_blocks: usize,
    pub num_kv_heads: usize,
    pub tokens_per_block: usize,
    pub head_dim: usize,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// A batch's view of the cache: row-major block table `[batch][max_blocks_per_seq]` and
/// sequence lengths.
#[derive(Clone, Copy, Debug)]
pub struct PagedBatch<'a> {
    pub table: &'a [u32],
    pub max_blocks_per_seq: usize,
    pub seq_lens: &'a [u32],
}

impl PagedBatch<'_> {
    pub fn batch(&self) -> usize {
        self.seq_lens.len()
    }
}

impl PagedKvStore {
    /// Pools with every element set to `fill` (NaN in tests: unused slots must not be read).
    pub fn new(num_blocks: usize, num_kv_heads: usize, tokens_per_block: usize, head_dim: usize, fill: f32) -> Self {
        let n = num_blocks * num_kv_heads * tokens_per_block * head_dim;
        PagedKvStore { num_blocks, num_kv_heads, tokens_per_block, head_dim, k: vec![fill; n], v: vec![fill; n] }
    }

    /// Element offset of `(block, kv_head, slot, 0)`.
    pub fn offset(&self, block: usize, kv_head: usize, slot: usize) -> usize {
        ((block * self.num_kv_heads + kv_head) * self.tokens_per_block + slot) * self.head_dim
    }

    /// The block holding position `pos` of sequence `b`, if the table names a valid one.
    fn block_of(&self, batch: &PagedBatch, b: usize, pos: usize) -> Option<usize> {
        let page = pos / self.tokens_per_block;
        if b >= batch.batch() || page >= batch.max_blocks_per_seq {
            return None;
        }
        let block = *batch.table.get(b * batch.max_blocks_per_seq + page)? as usize;
        (block < self.num_blocks).then_some(block)
    }

    /// `kv_append`: token `t` of sequence `seq_idx[t]` at `positions[t]`, rows of
    /// `num_kv_heads × head_dim` at `k_new[t * k_stride ..]` (and `v`). Tokens without a valid
    /// sequence, page or block are skipped.
    #[allow(clippy::too_many_arguments)]
    pub fn append(&mut self, batch: &PagedBatch, seq_idx: &[u32], positions: &[u32], k_new: &[f32], k_stride: usize, v_new: &[f32], v_stride: usize) {
        let (d, kvh) = (self.head_dim, self.num_kv_heads);
        for (t, (&s, &pos)) in seq_idx.iter().zip(positions).enumerate() {
            let Some(block) = self.block_of(batch, s as usize, pos as usize) else { continue };
            for h in 0..kvh {
                let dst = self.offset(block, h, pos as usize % self.tokens_per_block);
                self.k[dst..dst + d].copy_from_slice(&k_new[t * k_stride + h * d..][..d]);
                self.v[dst..dst + d].copy_from_slice(&v_new[t * v_stride + h * d..][..d]);
            }
        }
    }

    /// Decode attention: `out[b][h] = softmax(scale · q[b][h] · Kᵀ) · V` over the readable
    /// tokens `0 .. min(len, max_blocks_per_seq × tokens_per_block)` of sequence `b` (tokens in
    /// blocks with invalid ids skipped), KV head `h / (num_heads / num_kv_heads)`; zeros when
    /// no token is readable. `q` is `[batch][num_heads][head_dim]` with sequences
    /// `q_seq_stride` apart; the output is contiguous `[batch][num_heads][head_dim]`.
    pub fn decode_attention(&self, batch: &PagedBatch, q: &[f32], num_heads: usize, scale: f32, q_seq_stride: usize) -> Vec<f32> {
        let d = self.head_dim;
        let group = num_heads / self.num_kv_heads;
        let mut out = vec![0f32; batch.batch() * num_heads * d];
        out.par_chunks_mut(d).enumerate().for_each(|(i, o)| {
            let (b, h) = (i / num_heads, i % num_heads);
            let kvh = h / group;
            let qh = &q[b * q_seq_stride + h * d..][..d];
            let len = (batch.seq_lens[b] as usize).min(batch.max_blocks_per_seq * self.tokens_per_block);
            let rows: Vec<usize> = (0..len).filter_map(|pos| self.block_of(batch, b, pos).map(|blk| self.offset(blk, kvh, pos % self.tokens_per_block))).collect();
            if rows.is_empty() {
                return;
            }
            let scores: Vec<f64> = rows.iter().map(|&r| self.k[r..r + d].iter().zip(qh).map(|(&k, &q)| k as f64 * q as f64).sum::<f64>() * scale as f64).collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = weights.iter().sum();
            let mut acc = vec![0f64; d];
            for (&r, &w) in rows.iter().zip(&weights) {
                for (a, &v) in acc.iter_mut().zip(&self.v[r..r + d]) {
                    *a += w * v as f64;
                }
            }
            for (o, a) in o.iter_mut().zip(acc) {
                *o = (a / sum) as f32;
            }
        });
        out
    }
}

/// The new tokens of one sequence for [`PagedKvStore::context_attention`].
#[derive(Clone, Copy, Debug)]
pub struct ContextSeq {
    /// Row of the first new token in `q` and in the output.
    pub q_offset: usize,
    pub new_tokens: usize,
    /// Tokens already in the cache before the new ones.
    pub start_pos: usize,
}

impl PagedKvStore {
    /// Causal context attention (paged FMHA): new token `i` of sequence `b` (row
    /// `q_offset + i` of `q`, rows `q_token_stride` apart, heads contiguous) at position
    /// `start_pos + i` attends the readable positions `0 ..= start_pos + i` of its row of
    /// `batch.table` (below `max_blocks_per_seq × tokens_per_block`, tokens in blocks with
    /// invalid ids skipped), f64 accumulation; a row with no readable position gets zeros.
    /// `batch.seq_lens` is not read. Returns `[total_rows][num_heads][head_dim]`, rows of no
    /// sequence zero.
    pub fn context_attention(&self, batch: &PagedBatch, seqs: &[ContextSeq], q: &[f32], num_heads: usize, scale: f32, q_token_stride: usize, total_rows: usize) -> Vec<f32> {
        let d = self.head_dim;
        let group = num_heads / self.num_kv_heads;
        let mut owner = vec![None; total_rows];
        for (b, s) in seqs.iter().enumerate() {
            for i in 0..s.new_tokens {
                owner[s.q_offset + i] = Some((b, i));
            }
        }
        let mut out = vec![0f32; total_rows * num_heads * d];
        out.par_chunks_mut(d).enumerate().for_each(|(idx, o)| {
            let (row, h) = (idx / num_heads, idx % num_heads);
            let Some((b, i)) = owner[row] else { return };
            let end = (seqs[b].start_pos + i + 1).min(batch.max_blocks_per_seq * self.tokens_per_block);
            let kvh = h / group;
            let rows: Vec<usize> = (0..end).filter_map(|pos| self.block_of(batch, b, pos).map(|blk| self.offset(blk, kvh, pos % self.tokens_per_block))).collect();
            self.attend(&q[row * q_token_stride + h * d..][..d], &rows, scale, o);
        });
        out
    }

    /// `o = softmax(scale · q · Kᵀ) · V` over the pool rows `rows` (f64), zeros when empty.
    fn attend(&self, q: &[f32], rows: &[usize], scale: f32, o: &mut [f32]) {
        let d = self.head_dim;
        if rows.is_empty() {
            o.fill(0.0);
            return;
        }
        let scores: Vec<f64> = rows.iter().map(|&r| self.k[r..r + d].iter().zip(q).map(|(&k, &q)| k as f64 * q as f64).sum::<f64>() * scale as f64).collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut acc = vec![0f64; d];
        let mut sum = 0f64;
        for (&r, s) in rows.iter().zip(&scores) {
            let w = (s - max).exp();
            sum += w;
            for (a, &v) in acc.iter_mut().zip(&self.v[r..r + d]) {
                *a += w * v as f64;
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = (a / sum) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paged attention equals dense attention over the same tokens, whatever the block order.
    #[test]
    fn paged_matches_dense_attention_and_skips_poisoned_slots() {
        let (tpb, d, kvh, heads) = (4usize, 8usize, 2usize, 4usize);
        let len = 10usize;
        // Blocks 5, 1, 3 (non-contiguous) hold positions 0..12; NaN everywhere else.
        let mut store = PagedKvStore::new(8, kvh, tpb, d, f32::NAN);
        let table = [5u32, 1, 3, u32::MAX];
        let lens = [len as u32];
        let batch = PagedBatch { table: &table, max_blocks_per_seq: 4, seq_lens: &lens };
        let k: Vec<f32> = (0..len * kvh * d).map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0).collect();
        let v: Vec<f32> = (0..len * kvh * d).map(|i| ((i * 5) % 11) as f32 / 5.0 - 1.0).collect();
        let pos: Vec<u32> = (0..len as u32).collect();
        store.append(&batch, &vec![0; len], &pos, &k, kvh * d, &v, kvh * d);
        let q: Vec<f32> = (0..heads * d).map(|i| (i % 5) as f32 / 4.0 - 0.5).collect();
        let got = store.decode_attention(&batch, &q, heads, 0.5, heads * d);
        for h in 0..heads {
            let g = h / (heads / kvh);
            let s: Vec<f64> = (0..len).map(|t| (0..d).map(|x| q[h * d + x] as f64 * k[t * kvh * d + g * d + x] as f64).sum::<f64>() * 0.5).collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for x in 0..d {
                let want: f64 = (0..len).map(|t| w[t] * v[t * kvh * d + g * d + x] as f64).sum::<f64>() / z;
                assert!((got[h * d + x] as f64 - want).abs() < 1e-5, "head {h} col {x}");
            }
        }
        // A sequence whose blocks are all invalid reads nothing: zeros.
        let bad = [u32::MAX; 4];
        let none = PagedBatch { table: &bad, max_blocks_per_seq: 4, seq_lens: &lens };
        assert!(store.decode_attention(&none, &q, heads, 0.5, heads * d).iter().all(|&x| x == 0.0));
    }

    /// Each new token's context attention equals decode attention over its prefix, and a
    /// context split in two chunks equals the whole.
    #[test]
    fn context_attention_is_causal_decode_per_token() {
        let (tpb, d, kvh, heads, len) = (4usize, 8usize, 2usize, 4usize, 11usize);
        let mut store = PagedKvStore::new(6, kvh, tpb, d, f32::NAN);
        let table = [4u32, 0, 2, u32::MAX];
        let k: Vec<f32> = (0..len * kvh * d).map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0).collect();
        let v: Vec<f32> = (0..len * kvh * d).map(|i| ((i * 5) % 11) as f32 / 5.0 - 1.0).collect();
        let pos: Vec<u32> = (0..len as u32).collect();
        let lens = [len as u32];
        let batch = PagedBatch { table: &table, max_blocks_per_seq: 4, seq_lens: &lens };
        store.append(&batch, &vec![0; len], &pos, &k, kvh * d, &v, kvh * d);
        let q: Vec<f32> = (0..len * heads * d).map(|i| ((i * 3) % 7) as f32 / 3.0 - 1.0).collect();
        let whole = store.context_attention(&batch, &[ContextSeq { q_offset: 0, new_tokens: len, start_pos: 0 }], &q, heads, 0.4, heads * d, len);
        for t in 0..len {
            let l = [t as u32 + 1];
            let dec = store.decode_attention(&PagedBatch { table: &table, max_blocks_per_seq: 4, seq_lens: &l }, &q[t * heads * d..], heads, 0.4, heads * d);
            assert_eq!(&whole[t * heads * d..][..heads * d], &dec[..]);
        }
        // Chunk 2 (tokens 5..11) after chunk 1, placed at rows 0.. of its own q.
        let tail = store.context_attention(&batch, &[ContextSeq { q_offset: 0, new_tokens: 6, start_pos: 5 }], &q[5 * heads * d..], heads, 0.4, heads * d, 6);
        assert_eq!(&whole[5 * heads * d..], &tail[..]);
    }
}
