//! The host-side plan of one step: token rows in device order (single-token generation
//! items first, then context items, each item's tokens contiguous), and per attention group
//! the block-table rows, sequence lengths and append slots its kernels take. Pure
//! bookkeeping, tested on the CPU.

use host_runtime::executor::BackendItem;
use host_runtime::kv::BlockId;

/// The items one attention kernel handles (decode or context), as rows of its own block
/// tables, with their tokens at rows `first_row ..` of the step's activations.
#[derive(Debug, Default, PartialEq)]
pub struct Group<'a> {
    /// Indices into the step's items, in table-row order.
    pub items: Vec<usize>,
    /// The step row of the group's first token.
    pub first_row: usize,
    /// Each item's block table, cut to the blocks its positions use.
    pub tables: Vec<&'a [BlockId]>,
    /// `start_pos + tokens` per item.
    pub seq_lens: Vec<usize>,
    /// Per token of the group: its item's table row and its position (kv_append).
    pub seq_idx: Vec<u32>,
    pub positions: Vec<u32>,
    /// Per item: its first token's step row, its token count and start position
    /// (context attention).
    pub q_offsets: Vec<u32>,
    pub new_tokens: Vec<u32>,
    pub start_pos: Vec<u32>,
}

impl Group<'_> {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Tokens in the group.
    pub fn num_tokens(&self) -> usize {
        self.seq_idx.len()
    }

    /// The longest block-table row (at least 1).
    pub fn max_blocks(&self) -> usize {
        self.tables.iter().map(|t| t.len()).max().unwrap_or(0).max(1)
    }
}

/// One step's rows and groups.
#[derive(Debug, Default, PartialEq)]
pub struct StepPlan<'a> {
    /// Token ids and positions, one per step row.
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    /// Single-token generation items (decode attention).
    pub decode: Group<'a>,
    /// Items with several tokens or starting at position 0 (context attention).
    pub context: Group<'a>,
    /// The step row of the last token of each item that wants logits, in item order.
    pub logit_rows: Vec<u32>,
}

/// Whether an item is a single generated token over an existing cache.
pub fn is_decode(it: &BackendItem) -> bool {
    it.tokens.len() == 1 && it.start_pos > 0
}

/// Lays out `items` (validated by the caller: tokens present, tables long enough).
pub fn plan_step<'a>(items: &[BackendItem<'a>], tokens_per_block: usize) -> StepPlan<'a> {
    let mut plan = StepPlan::default();
    let mut last_row = vec![0u32; items.len()];
    for decode in [true, false] {
        let mut g = Group { first_row: plan.tokens.len(), ..Group::default() };
        for (i, it) in items.iter().enumerate().filter(|(_, it)| is_decode(it) == decode) {
            let row = plan.tokens.len() as u32;
            let (start, n) = (it.start_pos, it.tokens.len());
            let table_row = g.items.len() as u32;
            g.items.push(i);
            g.tables.push(&it.block_table[..(start + n).div_ceil(tokens_per_block)]);
            g.seq_lens.push(start + n);
            g.q_offsets.push(row);
            g.new_tokens.push(n as u32);
            g.start_pos.push(start as u32);
            for (p, &t) in (start..start + n).zip(it.tokens) {
                plan.tokens.push(t);
                plan.positions.push(p as u32);
                g.seq_idx.push(table_row);
                g.positions.push(p as u32);
            }
            last_row[i] = plan.tokens.len() as u32 - 1;
        }
        if decode { plan.decode = g } else { plan.context = g }
    }
    plan.logit_rows = items.iter().zip(&last_row).filter(|(it, _)| it.needs_logits).map(|(_, &r)| r).collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(tokens: &'a [u32], start_pos: usize, block_table: &'a [u32], needs_logits: bool) -> BackendItem<'a> {
        BackendItem { tokens, start_pos, block_table, needs_logits }
    }

    #[test]
    fn decode_items_come_first_and_rows_map_back() {
        let (t0, t1, t2) = ([5u32, 6, 7], [9u32], [4u32]);
        let (b0, b1, b2) = ([3u32, 4, 8], [1u32, 2], [7u32]);
        // Item 0: a context chunk at 17..20 (blocks of 16: two blocks used); item 1: decode at
        // 20; item 2: a one-token prompt (context, start 0) without logits.
        let items = [item(&t0, 17, &b0, true), item(&t1, 20, &b1, true), item(&t2, 0, &b2, false)];
        let p = plan_step(&items, 16);
        assert_eq!(p.tokens, vec![9, 5, 6, 7, 4]);
        assert_eq!(p.positions, vec![20, 17, 18, 19, 0]);
        assert_eq!(p.decode.items, vec![1]);
        assert_eq!(p.decode.tables, vec![&b1[..2]]);
        assert_eq!(p.decode.seq_lens, vec![21]);
        assert_eq!((p.decode.seq_idx.clone(), p.decode.positions.clone()), (vec![0], vec![20]));
        assert_eq!(p.context.items, vec![0, 2]);
        assert_eq!(p.context.first_row, 1);
        assert_eq!(p.context.tables, vec![&b0[..2], &b2[..1]]);
        assert_eq!(p.context.seq_lens, vec![20, 1]);
        assert_eq!(p.context.seq_idx, vec![0, 0, 0, 1]);
        assert_eq!(p.context.q_offsets, vec![1, 4]);
        assert_eq!(p.context.new_tokens, vec![3, 1]);
        assert_eq!(p.context.start_pos, vec![17, 0]);
        assert_eq!(p.context.max_blocks(), 2);
        // Logits: item 0's last row (3), item 1's row (0); item 2 wants none.
        assert_eq!(p.logit_rows, vec![3, 0]);
    }
}
