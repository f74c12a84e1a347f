//! Building blocks of the CPU forward pass: linear layers (the pluggable weight format),
//! causal attention over a sequence's keys and values, and the batch bookkeeping every
//! architecture shares (flattening the batch, the per-sequence K/V round trip, picking the
//! rows that get logits).

use super::kv::KvStore;
use super::SeqInput;
use host_runtime::cpu;
use rayon::prelude::*;

/// Weight storage of a linear layer: f32, or a GGML block format kept as loaded (rows are
/// decoded on the fly inside the matmul, so the bytes read per token are the file's).
#[derive(Clone, Debug)]
pub enum WeightData {
    F32(Vec<f32>),
    Ggml { ty: quant::GgmlType, bytes: Vec<u8> },
}

/// Rows of a GGML-format matrix, decoded into the caller's scratch buffer.
struct GgmlRows<'a> {
    ty: quant::GgmlType,
    bytes: &'a [u8],
    row_bytes: usize,
}

impl GgmlRows<'_> {
    fn row_bytes(&self, j: usize) -> &[u8] {
        &self.bytes[j * self.row_bytes..(j + 1) * self.row_bytes]
    }
}

impl cpu::WeightRows for GgmlRows<'_> {
    fn row<'a>(&'a self, j: usize, scratch: &'a mut [f32]) -> &'a [f32] {
        match self.ty {
            quant::GgmlType::Q8_0 | quant::GgmlType::Q4_1 => cpu::qdot::decode_row(self.ty == quant::GgmlType::Q4_1, self.row_bytes(j), scratch),
            _ => quant::dequantize(self.ty, self.row_bytes(j), scratch).expect("row geometry checked in Linear::ggml"),
        }
        scratch
    }

    /// Decodes rows `j0..j1` straight into the panel (no per-row copy).
    fn panel<'a>(&'a self, j0: usize, j1: usize, k: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        scratch.resize((j1 - j0) * k, 0.0);
        for (jj, dst) in scratch.chunks_exact_mut(k).enumerate() {
            self.row(j0 + jj, dst);
        }
        scratch
    }

    fn has_fused_dot(&self) -> bool {
        matches!(self.ty, quant::GgmlType::Q8_0 | quant::GgmlType::Q4_1)
    }

    fn fused_dot(&self, j: usize, x: &[f32], block_sums: &[f32]) -> f32 {
        match self.ty {
            quant::GgmlType::Q8_0 => cpu::qdot::dot_q8_0(x, self.row_bytes(j)),
            _ => cpu::qdot::dot_q4_1(x, block_sums, self.row_bytes(j)),
        }
    }

    /// Every activation row against row `j`, decoded once (see `cpu::qdot`).
    fn fused_dots(&self, j: usize, x: &[f32], block_sums: &[f32], out: &mut [f32]) {
        match self.ty {
            quant::GgmlType::Q8_0 => cpu::qdot::dot_q8_0_rows(x, self.row_bytes(j), out),
            _ => cpu::qdot::dot_q4_1_rows(x, block_sums, self.row_bytes(j), out),
        }
    }
}

/// `y = x · Wᵀ + b` with `W` of shape `[out, inp]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub out: usize,
    pub inp: usize,
    pub weight: WeightData,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn new(out: usize, inp: usize, w: Vec<f32>, bias: Option<Vec<f32>>) -> Self {
        assert_eq!(w.len(), out * inp, "Linear weight is not [out, inp]");
        Linear { out, inp, weight: WeightData::F32(w), bias }
    }

    /// A layer whose `[out, inp]` weight stays in GGML block format `ty`. Errors when the
    /// rows are not whole blocks, the byte count is wrong, or the type cannot be decoded.
    pub fn ggml(out: usize, inp: usize, ty: quant::GgmlType, bytes: Vec<u8>, bias: Option<Vec<f32>>) -> Result<Self, String> {
        if !quant::supports_dequantize(ty) {
            return Err(format!("{} weights cannot be decoded", ty.name()));
        }
        let row_bytes = ty.bytes_for(inp as u64).ok_or_else(|| format!("rows of {inp} are not whole {} blocks", ty.name()))? as usize;
        if bytes.len() != row_bytes * out {
            return Err(format!("{} bytes for {out} rows of {row_bytes}", bytes.len()));
        }
        Ok(Linear { out, inp, weight: WeightData::Ggml { ty, bytes }, bias })
    }

    /// Applies the layer to `m` rows of `x`.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        match &self.weight {
            WeightData::F32(w) => cpu::matmul_nt(x, w, self.bias.as_deref(), m, self.inp, self.out),
            WeightData::Ggml { ty, bytes } => {
                let row_bytes = bytes.len() / self.out.max(1);
                cpu::matmul_nt_rows(x, self.bias.as_deref(), m, self.inp, self.out, &GgmlRows { ty: *ty, bytes, row_bytes })
            }
        }
    }
}

/// Shape of attention heads.
#[derive(Clone, Copy, Debug)]
pub struct HeadShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Causal attention of the query heads of KV head `kvh` (`group` heads from `kvh·group`)
/// for `t` new queries (`q` `[t, heads, d]`, positions `start..start+t`) over the rows of
/// positions `0..start+t` (`k`, `v`: one `[kv_heads × d]` row per position), each key and
/// value row read once for the group. Returns `[t, group, d]`.
fn group_attention(q: &[f32], k: &[&[f32]], v: &[&[f32]], start: usize, t: usize, kvh: usize, s: HeadShape) -> Vec<f32> {
    let d = s.head_dim;
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; t * group * d];
    let mut scores = Vec::new();
    for (i, o) in out.chunks_exact_mut(group * d).enumerate() {
        let qi = &q[(i * s.heads + kvh * group) * d..][..group * d];
        let n = start + i + 1;
        cpu::attend_rows(qi, group, &k[..n], &v[..n], kvh * d, scale, &mut scores, o);
    }
    out
}

/// The tokens of every sequence, concatenated, and the position of each.
pub fn flatten(seqs: &[SeqInput]) -> (Vec<u32>, Vec<u32>) {
    let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
    let mut positions = Vec::with_capacity(tokens.len());
    for s in seqs {
        positions.extend((s.start..s.start + s.tokens.len()).map(|p| p as u32));
    }
    (tokens, positions)
}

/// One layer's attention over a batch: stores each sequence's new K/V rows (`k`, `v`
/// `[total, kv_heads × d]`) in layer `layer` of `kv`, then attends its queries (`q`
/// `[total, heads × d]`) causally over every position stored, every (sequence, KV head) pair
/// in parallel, reading the store in place. Returns `[total, heads × d]`.
pub fn attend(seqs: &[SeqInput], layer: usize, q: &[f32], k: &[f32], v: &[f32], shape: HeadShape, kv: &mut dyn KvStore) -> Vec<f32> {
    let (heads, d) = (shape.heads, shape.head_dim);
    let q_row = heads * d;
    let kv_row = shape.kv_heads * d;
    let mut offsets = Vec::with_capacity(seqs.len());
    let mut at = 0;
    for (si, s) in seqs.iter().enumerate() {
        let t = s.tokens.len();
        kv.write(si, layer, s.start, &k[at * kv_row..(at + t) * kv_row], &v[at * kv_row..(at + t) * kv_row]);
        offsets.push(at);
        at += t;
    }
    let kv: &dyn KvStore = kv;
    let rows: Vec<_> = seqs.iter().enumerate().map(|(si, s)| kv.rows(si, layer, s.start + s.tokens.len())).collect();
    let group = heads / shape.kv_heads;
    let work: Vec<(usize, usize)> = (0..seqs.len()).flat_map(|si| (0..shape.kv_heads).map(move |g| (si, g))).collect();
    let parts: Vec<Vec<f32>> = work
        .par_iter()
        .map(|&(si, g)| {
            let (s, (kr, vr)) = (&seqs[si], &rows[si]);
            group_attention(&q[offsets[si] * q_row..], kr, vr, s.start, s.tokens.len(), g, shape)
        })
        .collect();
    let mut out = vec![0f32; at * q_row];
    for (&(si, g), part) in work.iter().zip(&parts) {
        for (i, rows) in part.chunks_exact(group * d).enumerate() {
            out[((offsets[si] + i) * heads + g * group) * d..][..group * d].copy_from_slice(rows);
        }
    }
    out
}

/// `x += y`, elementwise (the residual add).
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// The hidden rows that get logits: every row (`all_logits`) or each sequence's last (none
/// for an empty sequence). `x` is `[total, hidden]`, sequences of `lens` rows in order.
/// Returns the rows, gathered, and their count.
pub fn logit_rows(x: &[f32], hidden: usize, lens: &[usize], all_logits: bool) -> (Vec<f32>, usize) {
    let mut rows = Vec::new();
    let mut at = 0;
    for &t in lens {
        if all_logits {
            rows.extend(at..at + t);
        } else if t > 0 {
            rows.push(at + t - 1);
        }
        at += t;
    }
    let sel = rows.iter().flat_map(|&r| x[r * hidden..(r + 1) * hidden].iter().copied()).collect();
    (sel, rows.len())
}

/// `[rows, vocab]` logits of [`logit_rows`]' rows, split back per sequence.
pub fn split_logits(logits: &[f32], vocab: usize, lens: &[usize], all_logits: bool) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut r = 0;
    for &t in lens {
        let n = if all_logits { t } else { usize::from(t > 0) };
        out.push(logits[r * vocab..(r + n) * vocab].to_vec());
        r += n;
    }
    out
}
