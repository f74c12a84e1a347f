//! The harness's model of the backend: each request's tokens with their prefix
//! fingerprints ([`Model`]), and the device and host KV contents as fingerprints
//! ([`Shadow`]), updated the way a backend runs a step (swap-outs, then swap-ins, then the
//! block copies, then the items, which all read before any writes).

use std::collections::BTreeMap;

use crate::scheduler::{RequestId, Step};
use crate::testing::Rng;

/// The driver's view of a request.
pub(super) struct Model {
    /// One beam, or `width` once a beam group forked.
    pub(super) beams: Vec<BeamModel>,
    pub(super) width: usize,
    pub(super) prompt_len: usize,
    pub(super) max_new: usize,
}

/// One beam's tokens with their prefix fingerprints.
#[derive(Clone)]
pub(super) struct BeamModel {
    pub(super) tokens: Vec<u32>,
    /// Prefix fingerprints of `tokens` (computed on demand).
    fps: Vec<u64>,
}

impl Model {
    pub(super) fn done(&self) -> bool {
        self.beams[0].tokens.len() >= self.prompt_len + self.max_new
    }
}

impl BeamModel {
    pub(super) fn new(tokens: Vec<u32>) -> Self {
        BeamModel {
            tokens,
            fps: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, t: u32) {
        self.tokens.push(t);
    }

    fn fingerprints(&mut self) -> &[u64] {
        while self.fps.len() < self.tokens.len() {
            let prev = self.fps.last().copied().unwrap_or(0x5EED);
            let t = u64::from(self.tokens[self.fps.len()]);
            self.fps
                .push(Rng::new(prev ^ t.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64() | 1);
        }
        &self.fps
    }
}

/// Device and host KV contents as fingerprints (0 = never written).
pub(super) struct Shadow {
    pub(super) tpb: usize,
    pub(super) device: Vec<u64>,
    pub(super) host: Vec<u64>,
}

impl Shadow {
    fn copy(src: &[u64], s: usize, dst: &mut [u64], d: usize, tpb: usize) -> Result<(), String> {
        let (a, b) = (s * tpb, d * tpb);
        if a + tpb > src.len() || b + tpb > dst.len() {
            return Err(format!("swap of block/slot {s} -> {d} out of range"));
        }
        dst[b..b + tpb].copy_from_slice(&src[a..a + tpb]);
        Ok(())
    }

    /// Applies a step: swaps, then each item reads its prefix and writes its tokens.
    pub(super) fn run(
        &mut self,
        step: &Step,
        model: &mut BTreeMap<RequestId, Model>,
    ) -> Result<(), String> {
        let tpb = self.tpb;
        for &(b, s) in &step.swap_out {
            Shadow::copy(&self.device, b as usize, &mut self.host, s, tpb)?;
        }
        for &(s, b) in &step.swap_in {
            Shadow::copy(&self.host, s, &mut self.device, b as usize, tpb)?;
        }
        for &(s, d) in &step.block_copies {
            let (a, b) = (s as usize * tpb, d as usize * tpb);
            if a.max(b) + tpb > self.device.len() {
                return Err(format!("block copy {s} -> {d} out of range"));
            }
            self.device.copy_within(a..a + tpb, b);
        }
        // The items of a step run concurrently: every read sees the state before the step.
        for it in &step.items {
            let m = model
                .get_mut(&it.id)
                .and_then(|m| m.beams.get_mut(it.beam))
                .ok_or(format!(
                    "step item for unknown request {} beam {}",
                    it.id, it.beam
                ))?;
            let fps = m.fingerprints();
            let slot = |p: usize| it.block_table[p / tpb] as usize * tpb + p % tpb;
            if let Some(p) = (0..it.start_pos).find(|&p| self.device[slot(p)] != fps[p]) {
                return Err(format!(
                    "request {} beam {}: KV at position {p} (block {}) is not its prefix's",
                    it.id,
                    it.beam,
                    it.block_table[p / tpb]
                ));
            }
        }
        for it in &step.items {
            let fps = model
                .get_mut(&it.id)
                .and_then(|m| m.beams.get_mut(it.beam))
                .map(|m| m.fingerprints())
                .unwrap_or_default();
            let end = it.start_pos + it.tokens.len();
            for (p, &fp) in fps.iter().enumerate().take(end).skip(it.start_pos) {
                self.device[it.block_table[p / tpb] as usize * tpb + p % tpb] = fp;
            }
        }
        Ok(())
    }
}
