//! Where the CPU forward pass keeps keys and values: the [`KvStore`] trait, a contiguous
//! per-sequence cache ([`KvCache`], for single-sequence use and the golden tests) and the
//! paged store ([`PagedKv`]) whose blocks the scheduler's block pool hands out.
//!
//! Layout of one position's row: `[kv_head][head_dim]` f32 (K and V after RoPE).

/// Storage of K/V rows for the sequences of one forward pass (indexed by their place in
/// the batch).
pub trait KvStore {
    /// Stores `t` rows of K and V for sequence `seq`, layer `layer`, at positions
    /// `start..start + t` (`k`, `v` are `[t][row]`).
    fn write(&mut self, seq: usize, layer: usize, start: usize, k: &[f32], v: &[f32]);
    /// The K rows and the V rows of sequence `seq`, layer `layer`, positions `0..len`, in
    /// place (one `row`-long slice per position).
    fn rows(&self, seq: usize, layer: usize, len: usize) -> (Vec<&[f32]>, Vec<&[f32]>);
}

/// Keys and values of one sequence, every layer, contiguous `[position][kv_head][head_dim]`.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// Positions already stored.
    pub len: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache { k: vec![Vec::new(); layers], v: vec![Vec::new(); layers], len: 0 }
    }
}

/// A batch of contiguous caches viewed as one store.
pub struct ContiguousKv<'a, 'b> {
    pub caches: &'a mut [&'b mut KvCache],
    pub row: usize,
}

impl KvStore for ContiguousKv<'_, '_> {
    fn write(&mut self, seq: usize, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let c = &mut *self.caches[seq];
        let at = start * self.row;
        for (dst, src) in [(&mut c.k[layer], k), (&mut c.v[layer], v)] {
            dst.truncate(at);
            dst.resize(at, 0.0);
            dst.extend_from_slice(src);
        }
    }

    fn rows(&self, seq: usize, layer: usize, len: usize) -> (Vec<&[f32]>, Vec<&[f32]>) {
        let c = &*self.caches[seq];
        let n = len * self.row;
        (c.k[layer][..n].chunks_exact(self.row).collect(), c.v[layer][..n].chunks_exact(self.row).collect())
    }
}

/// Paged K/V storage: `blocks` blocks of `tokens_per_block` positions, every layer, laid
/// out `[block][layer][k|v][slot][row]`. Block ids come from the scheduler's block pool;
/// block 0 is the pool's null block (allocated here but never written by a valid table).
#[derive(Clone, Debug)]
pub struct PagedKv {
    pub tokens_per_block: usize,
    pub layers: usize,
    pub row: usize,
    pub blocks: usize,
    data: Vec<f32>,
}

impl PagedKv {
    pub fn new(blocks: usize, tokens_per_block: usize, layers: usize, row: usize) -> Self {
        PagedKv { tokens_per_block, layers, row, blocks, data: vec![0.0; blocks * layers * 2 * tokens_per_block * row] }
    }

    /// f32 values in one block (all layers, K and V).
    pub fn block_len(&self) -> usize {
        self.layers * 2 * self.tokens_per_block * self.row
    }

    /// One whole block's values (for host-tier copies).
    pub fn block(&self, id: u32) -> &[f32] {
        let n = self.block_len();
        &self.data[id as usize * n..][..n]
    }

    pub fn block_mut(&mut self, id: u32) -> &mut [f32] {
        let n = self.block_len();
        &mut self.data[id as usize * n..][..n]
    }

    /// Copies block `src` (every layer, K and V) into block `dst` (a beam fork's copy).
    pub fn copy_block(&mut self, src: u32, dst: u32) {
        let n = self.block_len();
        let at = src as usize * n;
        self.data.copy_within(at..at + n, dst as usize * n);
    }

    /// Offset of (block, layer, k|v, slot).
    fn offset(&self, block: u32, layer: usize, which: usize, slot: usize) -> usize {
        (((block as usize * self.layers + layer) * 2 + which) * self.tokens_per_block + slot) * self.row
    }

    /// A view of this store for one forward pass: sequence `i` uses `tables[i]`.
    pub fn view<'a>(&'a mut self, tables: Vec<&'a [u32]>) -> PagedView<'a> {
        PagedView { kv: self, tables }
    }
}

/// [`PagedKv`] with the block tables of one batch.
pub struct PagedView<'a> {
    kv: &'a mut PagedKv,
    tables: Vec<&'a [u32]>,
}

impl KvStore for PagedView<'_> {
    fn write(&mut self, seq: usize, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let (tpb, row) = (self.kv.tokens_per_block, self.kv.row);
        let table = self.tables[seq];
        for (which, src) in [k, v].into_iter().enumerate() {
            for (i, r) in src.chunks_exact(row).enumerate() {
                let pos = start + i;
                let off = self.kv.offset(table[pos / tpb], layer, which, pos % tpb);
                self.kv.data[off..off + row].copy_from_slice(r);
            }
        }
    }

    fn rows(&self, seq: usize, layer: usize, len: usize) -> (Vec<&[f32]>, Vec<&[f32]>) {
        let (tpb, row) = (self.kv.tokens_per_block, self.kv.row);
        let table = self.tables[seq];
        let gather = |which: usize| {
            (0..len)
                .map(|pos| {
                    let off = self.kv.offset(table[pos / tpb], layer, which, pos % tpb);
                    &self.kv.data[off..off + row]
                })
                .collect::<Vec<_>>()
        };
        (gather(0), gather(1))
    }
}
