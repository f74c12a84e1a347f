//! The KV cache's shape ([`KvCacheConfig`]) and its validation.
//!
//! Invariants after [`KvCacheConfig::validate`]: `tokens_per_block` is a power of two in
//! `8..=128`; `num_blocks` counts the null block and is in `2..=u32::MAX` (at least one usable
//! block, ids fit a [`BlockId`](super::BlockId)); the host tier fits `u32` slot indices and
//! is only configured together with prefix reuse (it caches reusable blocks only).

use thiserror::Error;

/// The smallest and largest supported block sizes in tokens.
pub const MIN_TOKENS_PER_BLOCK: usize = 8;
pub const MAX_TOKENS_PER_BLOCK: usize = 128;

/// The paged KV cache's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Tokens per block: a power of two in `8..=128`.
    pub tokens_per_block: usize,
    /// Device blocks, including the reserved null block 0.
    pub num_blocks: usize,
    /// Keep full blocks findable by their token prefix after their request ends.
    pub enable_reuse: bool,
    /// Host-memory slots that reusable blocks evicted from the device move to (0 = no host tier).
    pub host_cache_blocks: usize,
}

/// A [`KvCacheConfig`] field out of range; the message names the field, the value and the limit.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KvConfigError {
    #[error("tokens_per_block = {got} must be a power of two in {min}..={max}")]
    TokensPerBlock { got: usize, min: usize, max: usize },
    #[error("num_blocks = {got} must be at least {min} (the null block plus one usable block)")]
    TooFewBlocks { got: usize, min: usize },
    #[error("num_blocks = {got} exceeds the block id range (max {max})")]
    TooManyBlocks { got: usize, max: usize },
    #[error("host_cache_blocks = {got} exceeds the slot index range (max {max})")]
    TooManyHostBlocks { got: usize, max: usize },
    #[error(
        "host_cache_blocks = {got} needs enable_reuse = true (the host tier holds reusable blocks only)"
    )]
    HostTierWithoutReuse { got: usize },
}

impl KvCacheConfig {
    /// Checks every field; see the module invariants.
    pub fn validate(&self) -> Result<(), KvConfigError> {
        let tpb = self.tokens_per_block;
        if !tpb.is_power_of_two() || !(MIN_TOKENS_PER_BLOCK..=MAX_TOKENS_PER_BLOCK).contains(&tpb) {
            return Err(KvConfigError::TokensPerBlock {
                got: tpb,
                min: MIN_TOKENS_PER_BLOCK,
                max: MAX_TOKENS_PER_BLOCK,
            });
        }
        if self.num_blocks < 2 {
            return Err(KvConfigError::TooFewBlocks {
                got: self.num_blocks,
                min: 2,
            });
        }
        let max = u32::MAX as usize;
        if self.num_blocks > max {
            return Err(KvConfigError::TooManyBlocks {
                got: self.num_blocks,
                max,
            });
        }
        if self.host_cache_blocks > max {
            return Err(KvConfigError::TooManyHostBlocks {
                got: self.host_cache_blocks,
                max,
            });
        }
        if self.host_cache_blocks > 0 && !self.enable_reuse {
            return Err(KvConfigError::HostTierWithoutReuse {
                got: self.host_cache_blocks,
            });
        }
        Ok(())
    }

    /// Blocks that can be handed out (all but the null block).
    pub fn usable_blocks(&self) -> usize {
        self.num_blocks.saturating_sub(1)
    }
}

/// Blocks needed to hold `tokens` positions with `tokens_per_block` positions per block.
pub fn blocks_for(tokens: usize, tokens_per_block: usize) -> usize {
    tokens.div_ceil(tokens_per_block.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tpb: usize, n: usize) -> KvCacheConfig {
        KvCacheConfig {
            tokens_per_block: tpb,
            num_blocks: n,
            enable_reuse: false,
            host_cache_blocks: 0,
        }
    }

    #[test]
    fn validation_names_field_and_limits() {
        assert!(cfg(32, 10).validate().is_ok());
        for bad in [0, 4, 12, 256] {
            let e = cfg(bad, 10).validate().unwrap_err().to_string();
            assert!(
                e.contains("tokens_per_block") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
        let e = cfg(16, 1).validate().unwrap_err().to_string();
        assert!(e.contains("num_blocks = 1") && e.contains('2'), "{e}");
        let mut c = cfg(16, 4);
        c.host_cache_blocks = 3;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("host_cache_blocks = 3")
        );
        c.enable_reuse = true;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn blocks_for_rounds_up() {
        assert_eq!(blocks_for(0, 8), 0);
        assert_eq!(blocks_for(8, 8), 1);
        assert_eq!(blocks_for(9, 8), 2);
    }
}
