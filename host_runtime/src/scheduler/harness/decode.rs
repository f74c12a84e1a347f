//! Decoding fuzz bytes into a valid configuration and a sequence of [`Op`]s (beam groups
//! and their random reorders included), and running them through a [`Harness`] (the
//! `scheduler_ops` fuzz target and a property test).

use super::{Coverage, Harness, Op};
use crate::kv::KvCacheConfig;
use crate::scheduler::{CapacityPolicy, SchedulerConfig};

/// Reads bytes as small numbers; zeros once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }
}

/// Decodes fuzz bytes into a (valid) configuration and up to 4096 operations.
pub fn decode(data: &[u8]) -> (SchedulerConfig, KvCacheConfig, Vec<Op>) {
    let mut b = Bytes(data);
    let tpb = 8usize << (b.u8() % 5);
    let (blocks, flags) = (b.u8(), b.u8());
    let reuse = flags & 1 != 0;
    let kv = KvCacheConfig {
        tokens_per_block: tpb,
        num_blocks: 2 + usize::from(blocks % 40),
        enable_reuse: reuse,
        host_cache_blocks: if reuse {
            usize::from((flags >> 1) % 5)
        } else {
            0
        },
    };
    let cfg = SchedulerConfig {
        max_batch_size: 1 + usize::from(b.u8() % 8),
        max_num_tokens: tpb + usize::from(b.u8()) * 3,
        max_queue_size: 1 + usize::from(b.u8() % 12),
        max_seq_len: tpb * (1 + usize::from(b.u8() % 8)) + usize::from(b.u8() % 16),
        policy: if flags & 0x10 != 0 {
            CapacityPolicy::MaxUtilization
        } else {
            CapacityPolicy::GuaranteedNoEvict
        },
        chunked_context: flags & 0x20 != 0,
    };
    let mut ops = Vec::new();
    while !b.0.is_empty() && ops.len() < 4096 {
        ops.push(match b.u8() % 9 {
            0 | 1 => Op::Submit {
                prompt_len: usize::from(b.u16()) % (cfg.max_seq_len + 2),
                max_new: usize::from(b.u8()) % (2 * tpb + 1),
                family: b.u8() % 4,
                shared: usize::from(b.u16()),
                seed: u64::from(b.u8() % 8),
            },
            2 if b.u8() % 2 == 0 => Op::SubmitDuplicate {
                pick: usize::from(b.u8()),
            },
            2 => Op::SubmitFollowUp {
                pick: usize::from(b.u8()),
                extra: usize::from(b.u8() % 64),
                max_new: usize::from(b.u8()) % (2 * tpb + 1),
                seed: u64::from(b.u8() % 8),
            },
            3..=5 => Op::Step {
                seed: u64::from(b.u16()),
            },
            6 => {
                let pick = usize::from(b.u8());
                if pick % 2 == 0 {
                    Op::Finish { pick: pick / 2 }
                } else {
                    Op::Cancel { pick: pick / 2 }
                }
            }
            7 => Op::FinishDone,
            _ => Op::SubmitBeam {
                prompt_len: usize::from(b.u16()) % (cfg.max_seq_len + 2),
                max_new: usize::from(b.u8()) % (2 * tpb + 1),
                width: 1 + usize::from(b.u8() % 6),
                family: b.u8() % 4,
                shared: usize::from(b.u16()),
                seed: u64::from(b.u8() % 8),
            },
        });
    }
    (cfg, kv, ops)
}

/// Runs decoded bytes through a [`Harness`]: every operation, then a drain.
pub fn run_bytes(data: &[u8]) -> Result<Coverage, String> {
    let (cfg, kv, ops) = decode(data);
    let mut h =
        Harness::new(cfg, kv).map_err(|e| format!("decode produced an invalid config: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        h.apply(op).map_err(|e| format!("op {i} {op:?}: {e}"))?;
    }
    h.drain()?;
    Ok(h.coverage)
}
