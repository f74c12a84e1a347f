//! Sizing the KV cache from the device memory left after the weights.
//!
//! `budget = min(free_bytes × fraction, cap_bytes)`; every block, the reserved ones included
//! (the null block and the health probe's), takes `bytes_per_token × tokens_per_block`
//! bytes, so `num_blocks = budget / block_bytes`. The result must hold one request of
//! `max_seq_len` tokens plus the [`RESERVED_BLOCKS`]; otherwise
//! the error names the bytes that needs, the bytes available and the longest `max_seq_len`
//! that would fit. The block count is capped at the [`BlockId`](super::BlockId) range.

use thiserror::Error;

use super::config::{MAX_TOKENS_PER_BLOCK, MIN_TOKENS_PER_BLOCK, blocks_for};

/// The per-token footprint and the shapes that size the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvSizing {
    /// `layers × 2 × kv_heads × head_dim × dtype_bytes`.
    pub bytes_per_token: u64,
    pub tokens_per_block: usize,
    pub max_seq_len: usize,
}

/// Why no cache size could be chosen.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KvSizingError {
    #[error("bytes_per_token = 0: the KV footprint must be positive")]
    ZeroBytesPerToken,
    #[error("tokens_per_block = {got} must be a power of two in {min}..={max}")]
    TokensPerBlock { got: usize, min: usize, max: usize },
    #[error("max_seq_len = 0: must be at least 1")]
    ZeroMaxSeqLen,
    #[error("fraction = {got} must be in (0, 1]")]
    Fraction { got: f32 },
    #[error("block size {bytes_per_token} bytes/token × {tokens_per_block} tokens overflows u64")]
    Overflow {
        bytes_per_token: u64,
        tokens_per_block: usize,
    },
    #[error(
        "KV cache too small: one request of max_seq_len = {max_seq_len} needs {needed_bytes} bytes \
         (incl. the null block), but only {available_bytes} bytes are available; \
         the largest max_seq_len that fits is {max_fitting_seq_len}"
    )]
    TooSmall {
        max_seq_len: usize,
        needed_bytes: u64,
        available_bytes: u64,
        max_fitting_seq_len: usize,
    },
}

/// Blocks no request can use: the pool's null block and the executor's health-probe block.
pub const RESERVED_BLOCKS: u64 = 2;

/// The number of blocks (including the reserved ones) that fit the budget; see the module doc.
pub fn size_kv_cache(
    s: &KvSizing,
    free_bytes: u64,
    fraction: Option<f32>,
    cap_bytes: Option<u64>,
) -> Result<usize, KvSizingError> {
    let tpb = s.tokens_per_block;
    if s.bytes_per_token == 0 {
        return Err(KvSizingError::ZeroBytesPerToken);
    }
    if !tpb.is_power_of_two() || !(MIN_TOKENS_PER_BLOCK..=MAX_TOKENS_PER_BLOCK).contains(&tpb) {
        return Err(KvSizingError::TokensPerBlock {
            got: tpb,
            min: MIN_TOKENS_PER_BLOCK,
            max: MAX_TOKENS_PER_BLOCK,
        });
    }
    if s.max_seq_len == 0 {
        return Err(KvSizingError::ZeroMaxSeqLen);
    }
    let block_bytes = s
        .bytes_per_token
        .checked_mul(tpb as u64)
        .ok_or(KvSizingError::Overflow {
            bytes_per_token: s.bytes_per_token,
            tokens_per_block: tpb,
        })?;
    let budget = budget(free_bytes, fraction, cap_bytes)?;
    let total = (budget / block_bytes).min(u64::from(u32::MAX));
    let needed = blocks_for(s.max_seq_len, tpb) as u64 + RESERVED_BLOCKS;
    if total < needed {
        return Err(KvSizingError::TooSmall {
            max_seq_len: s.max_seq_len,
            needed_bytes: needed.saturating_mul(block_bytes),
            available_bytes: budget,
            max_fitting_seq_len: (total.saturating_sub(RESERVED_BLOCKS) as usize).saturating_mul(tpb),
        });
    }
    Ok(total as usize)
}

/// `free_bytes × fraction`, capped by `cap_bytes`.
fn budget(
    free_bytes: u64,
    fraction: Option<f32>,
    cap_bytes: Option<u64>,
) -> Result<u64, KvSizingError> {
    let mut b = free_bytes;
    if let Some(f) = fraction {
        if !(f > 0.0 && f <= 1.0) {
            return Err(KvSizingError::Fraction { got: f });
        }
        b = (free_bytes as f64 * f64::from(f)).floor() as u64;
    }
    Ok(cap_bytes.map_or(b, |c| b.min(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama8b() -> KvSizing {
        // 32 layers × 2 × 8 kv heads × 128 × 2 bytes = 128 KiB per token.
        KvSizing {
            bytes_per_token: 32 * 2 * 8 * 128 * 2,
            tokens_per_block: 32,
            max_seq_len: 8192,
        }
    }

    #[test]
    fn sizes_from_fraction_and_cap() {
        let s = KvSizing {
            max_seq_len: 1024,
            ..llama8b()
        };
        let block = 131072 * 32;
        assert_eq!(size_kv_cache(&s, 100 * block, None, None), Ok(100));
        assert_eq!(size_kv_cache(&s, 1000 * block, Some(0.5), None), Ok(500));
        assert_eq!(
            size_kv_cache(&s, 1000 * block, Some(0.5), Some(300 * block + 7)),
            Ok(300)
        );
        assert_eq!(
            size_kv_cache(&s, 1000 * block + block - 1, None, None),
            Ok(1000)
        );
    }

    #[test]
    fn too_small_names_the_three_numbers() {
        let s = llama8b();
        let block = 131072u64 * 32;
        // 8192 tokens = 256 blocks + null + probe = 258 needed; 100 available -> 98 usable -> 3136 tokens.
        let e = size_kv_cache(&s, 100 * block, None, None).unwrap_err();
        let msg = e.to_string();
        for n in [
            (258 * block).to_string(),
            (100 * block).to_string(),
            (98 * 32).to_string(),
        ] {
            assert!(msg.contains(&n), "{msg} lacks {n}");
        }
        assert_eq!(size_kv_cache(&s, 258 * block, None, None), Ok(258));
        assert!(size_kv_cache(&s, 257 * block, None, None).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let s = llama8b();
        for f in [0.0, -0.5, 1.5, f32::NAN] {
            assert!(matches!(
                size_kv_cache(&s, 1 << 40, Some(f), None),
                Err(KvSizingError::Fraction { .. })
            ));
        }
        let z = KvSizing {
            bytes_per_token: 0,
            ..llama8b()
        };
        assert_eq!(
            size_kv_cache(&z, 1 << 40, None, None),
            Err(KvSizingError::ZeroBytesPerToken)
        );
        let t = KvSizing {
            tokens_per_block: 48,
            ..llama8b()
        };
        assert!(
            size_kv_cache(&t, 1 << 40, None, None)
                .unwrap_err()
                .to_string()
                .contains("48")
        );
        let o = KvSizing {
            bytes_per_token: u64::MAX,
            ..llama8b()
        };
        assert!(matches!(
            size_kv_cache(&o, u64::MAX, None, None),
            Err(KvSizingError::Overflow { .. })
        ));
        assert!(size_kv_cache(&s, 0, None, None).is_err());
    }
}
