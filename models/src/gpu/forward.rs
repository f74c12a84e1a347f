//! One forward step on the GPU: embedding → per layer [RMSNorm → fused Q/K/V GEMM (+bias) →
//! RoPE of Q and K → K/V appended to the layer's pages → decode attention (single-token
//! generation items, multi-block when it pays) and paged context attention (the rest) →
//! output projection with the residual in its epilogue → RMSNorm → fused gate/up + SiLU →
//! down projection with the residual] → the rows that want logits gathered, normed and
//! multiplied by the LM head → per row, either its top candidates and log-sum-exp
//! (`logits_top_k`, a few hundred bytes to the host) or the whole bf16 row as f32.
//!
//! The residual stream alternates between the two `Activations::x` buffers (a GEMM's
//! residual input and output cannot alias): the attention half writes `x[1]` from `x[0]`, the
//! MLP half `x[0]` from `x[1]`.

use super::activations::{Activations, Widths};
use super::batch::{Group, StepPlan};
use super::kv::GpuKv;
use super::weights::{GpuLayer, GpuWeights};
use super::GpuError;
use crate::config::RopeLayout;
use half::bf16;
use host_runtime::kernels::{
    self, context_attention, decode_attention, gate_up_silu, gemm, kv_append, AppendSlots, BlockTables, ContextSeqs, DecodeShape, GemmEpilogue, MultiBlock, PagedKvShape, Residual, RopeShape, RopeStyle, Rows, SKINNY_MAX_M,
};
use host_runtime::executor::LogitsRow;
use host_runtime::sampling::LogitsWant;
use host_runtime::{DeviceBuffer, Gpu};

/// One attention group's metadata on the device.
struct GroupInputs {
    tables: BlockTables,
    slots: AppendSlots,
    first_row: usize,
    /// Context groups only.
    seqs: Option<ContextSeqs>,
}

/// A step's metadata on the device (small uploads, once per step).
struct StepInputs {
    ids: DeviceBuffer<u32>,
    positions: DeviceBuffer<u32>,
    logit_rows: Option<DeviceBuffer<u32>>,
    decode: Option<GroupInputs>,
    context: Option<GroupInputs>,
}

fn upload_group(gpu: &Gpu, shape: &PagedKvShape, g: &Group, context: bool) -> Result<Option<GroupInputs>, GpuError> {
    if g.is_empty() {
        return Ok(None);
    }
    let tables = BlockTables::upload(gpu, shape, &g.tables, &g.seq_lens, g.max_blocks())?;
    let slots = AppendSlots::upload(gpu, &tables, &g.seq_idx, &g.positions)?;
    let seqs = if context { Some(ContextSeqs::upload(gpu, &tables, &g.q_offsets, &g.new_tokens, &g.start_pos)?) } else { None };
    Ok(Some(GroupInputs { tables, slots, first_row: g.first_row, seqs }))
}

fn upload_step(gpu: &Gpu, shape: &PagedKvShape, plan: &StepPlan) -> Result<StepInputs, GpuError> {
    Ok(StepInputs {
        ids: gpu.upload(&plan.tokens)?,
        positions: gpu.upload(&plan.positions)?,
        logit_rows: if plan.logit_rows.is_empty() { None } else { Some(gpu.upload(&plan.logit_rows)?) },
        decode: upload_group(gpu, shape, &plan.decode, false)?,
        context: upload_group(gpu, shape, &plan.context, true)?,
    })
}

/// Runs `plan` (its tokens fit the activations; the caller validated the items) and returns
/// the logits rows of `plan.logit_rows`, in order, each as its want asks (`wants` has one
/// per row; whole rows when it is empty).
pub fn forward(gpu: &Gpu, w: &GpuWeights, kv: &mut GpuKv, act: &mut Activations, plan: &StepPlan, wants: &[LogitsWant]) -> Result<Vec<LogitsRow>, GpuError> {
    let n = plan.tokens.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let inp = upload_step(gpu, kv.shape(), plan)?;
    // A step of a few tokens is a chain of short, memory- or latency-bound kernels: launch
    // them programmatically so each starts while the previous one drains.
    gpu.set_latency_bound(n <= SKINNY_MAX_M);
    let c = &w.config;
    kernels::embedding(gpu, &w.embed, c.vocab_size, c.hidden, &inp.ids, &mut act.x[0])?;
    for (l, layer) in w.layers.iter().enumerate() {
        attention_half(gpu, w, l, layer, kv, act, &inp, n)?;
        mlp_half(gpu, w, layer, act, n)?;
    }
    match &inp.logit_rows {
        Some(rows) => logits(gpu, w, act, rows, n, wants),
        None => Ok(Vec::new()),
    }
}

/// `x[1] = x[0] + o(attention(rope(q), rope(k), v))` of `attn_norm(x[0])` for layer `l`.
#[allow(clippy::too_many_arguments)]
fn attention_half(gpu: &Gpu, w: &GpuWeights, l: usize, layer: &GpuLayer, kv: &mut GpuKv, act: &mut Activations, inp: &StepInputs, n: usize) -> Result<(), GpuError> {
    let c = &w.config;
    let wd = Widths::of(c);
    let [x0, x1] = &mut act.x;
    kernels::rms_norm_rows(gpu, x0, Residual::None, &layer.attn_norm, &mut act.h, n, c.hidden, c.norm_eps)?;
    gemm(gpu, &act.h, &layer.qkv, &mut act.qkv, n, wd.qkv, c.hidden, GemmEpilogue { bias: layer.qkv_bias.as_ref(), residual: None })?;
    // K heads follow the Q heads in each fused row: one launch rotates both.
    let style = if c.rope_layout == RopeLayout::Neox { RopeStyle::Neox } else { RopeStyle::Gptj };
    let rope = RopeShape { num_tokens: n, num_q_heads: c.heads + c.kv_heads, num_k_heads: 0, head_dim: c.head_dim, rot_dim: c.head_dim, q_token_stride: wd.qkv, k_token_stride: wd.qkv, style };
    kernels::rope(gpu, &mut act.qkv, None, &inp.positions, &w.inv_freq, &rope)?;
    let kv_cols = c.kv_heads * c.head_dim;
    for g in [&inp.decode, &inp.context].into_iter().flatten() {
        let row = g.first_row * wd.qkv;
        let k = Rows { buf: &act.qkv, offset: row + wd.q, stride: wd.qkv };
        let v = Rows { buf: &act.qkv, offset: row + wd.q + kv_cols, stride: wd.qkv };
        kv_append(gpu, kv.layer_mut(l), &g.tables, &g.slots, k, v)?;
    }
    let shape = DecodeShape { num_heads: c.heads, scale: 1.0 / (c.head_dim as f32).sqrt(), q_seq_stride: wd.qkv, out_seq_stride: wd.q };
    if let Some(g) = &inp.decode {
        // Decode items are the first rows: sequence b's query is row b.
        decode_attention(gpu, kv.layer(l), &g.tables, &act.qkv, &mut act.attn, &shape, MultiBlock::Auto(&mut act.workspace))?;
    }
    if let Some(GroupInputs { tables, seqs: Some(seqs), .. }) = &inp.context {
        context_attention(gpu, kv.layer(l), tables, seqs, &act.qkv, &mut act.attn, &shape)?;
    }
    gemm(gpu, &act.attn, &layer.o, x1, n, c.hidden, wd.q, GemmEpilogue { bias: layer.o_bias.as_ref(), residual: Some(x0) })?;
    Ok(())
}

/// `x[0] = x[1] + down(silu(gate(h)) * up(h))` with `h = ffn_norm(x[1])`.
fn mlp_half(gpu: &Gpu, w: &GpuWeights, layer: &GpuLayer, act: &mut Activations, n: usize) -> Result<(), GpuError> {
    let c = &w.config;
    let [x0, x1] = &mut act.x;
    kernels::rms_norm_rows(gpu, x1, Residual::None, &layer.ffn_norm, &mut act.h, n, c.hidden, c.norm_eps)?;
    gate_up_silu(gpu, &act.h, &layer.gate_up, &mut act.mlp, n, c.intermediate, c.hidden)?;
    gemm(gpu, &act.mlp, &layer.down, x0, n, c.hidden, c.intermediate, GemmEpilogue { bias: layer.down_bias.as_ref(), residual: Some(x1) })?;
    Ok(())
}

/// Final norm and LM head over the gathered rows; then each row reduced on the device or
/// widened to f32 on the host, as its want asks.
fn logits(gpu: &Gpu, w: &GpuWeights, act: &mut Activations, rows: &DeviceBuffer<u32>, n: usize, wants: &[LogitsWant]) -> Result<Vec<LogitsRow>, GpuError> {
    let c = &w.config;
    let r = rows.len();
    // The embedding kernel is a row gather: the residual stream is the table.
    kernels::embedding(gpu, &act.x[0], n, c.hidden, rows, &mut act.gathered)?;
    kernels::rms_norm_rows(gpu, &act.gathered, Residual::None, &w.final_norm, &mut act.normed, r, c.hidden, c.norm_eps)?;
    gemm(gpu, &act.normed, w.lm_head(), &mut act.logits, r, c.vocab_size, c.hidden, GemmEpilogue::none())?;
    let top_of = |want: Option<&LogitsWant>| match want {
        Some(&LogitsWant::Top { inv_temperature }) => Some(inv_temperature),
        _ => None,
    };
    let inv_t: Vec<Option<f32>> = (0..r).map(|i| top_of(wants.get(i))).collect();
    let full = inv_t.iter().filter(|t| t.is_none()).count();
    let mut tops = if full < r {
        let t: Vec<f32> = inv_t.iter().map(|t| t.unwrap_or(1.0)).collect();
        kernels::logits_top_k(gpu, &act.logits, c.vocab_size, c.vocab_size, &t, &mut act.top)?;
        act.top.download(gpu, r)?.into_iter().map(Some).collect()
    } else {
        vec![None; r]
    };
    let v = c.vocab_size;
    let widen = |row: &[bf16]| row.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    // Whole rows: one download when most rows want them, else one per row.
    let all = if full * 2 > r {
        let mut host = vec![bf16::ZERO; r * v];
        gpu.download_range(&act.logits, 0, &mut host)?;
        Some(host)
    } else {
        None
    };
    let mut row = vec![bf16::ZERO; v];
    (0..r)
        .map(|i| match (tops[i].take(), &all) {
            (Some(top), _) if inv_t[i].is_some() => Ok(LogitsRow::Top(top)),
            (_, Some(host)) => Ok(LogitsRow::Full(widen(&host[i * v..(i + 1) * v]))),
            (_, None) => {
                gpu.download_range(&act.logits, i * v, &mut row)?;
                Ok(LogitsRow::Full(widen(&row)))
            }
        })
        .collect()
}
