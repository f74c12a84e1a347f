//! Host overhead of the in-flight batching scheduler: mean and p99 time of one
//! `schedule()` plus the `on_step_done` calls for its items, with 256 running generation
//! requests (tokens_per_block 32, prefix reuse on, blocks to spare).
//!
//! Run: `cargo run --release -p host_runtime --example scheduler_overhead [steps]`.

use std::time::Instant;

use host_runtime::kv::KvCacheConfig;
use host_runtime::scheduler::{CapacityPolicy, Scheduler, SchedulerConfig};

const REQUESTS: u64 = 256;
const PROMPT: usize = 512;

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let cfg = SchedulerConfig {
        max_batch_size: REQUESTS as usize,
        max_num_tokens: 8192,
        max_queue_size: 1024,
        max_seq_len: 1 << 20,
        policy: CapacityPolicy::MaxUtilization,
        chunked_context: true,
    };
    let per_request = (PROMPT + steps + 64).div_ceil(32);
    let kv = KvCacheConfig {
        tokens_per_block: 32,
        num_blocks: REQUESTS as usize * per_request + 1,
        enable_reuse: true,
        host_cache_blocks: 0,
    };
    let mut s = Scheduler::new(cfg, kv).expect("config");
    for id in 0..REQUESTS {
        let prompt: Vec<u32> = (0..PROMPT as u32)
            .map(|p| (id as u32) * 100_003 + p)
            .collect();
        s.submit(id, prompt, 1 << 19).expect("submit");
    }
    // Prefill until every request generates.
    let mut warm = 0;
    loop {
        let step = s.schedule();
        let all_gen =
            step.items.len() == REQUESTS as usize && step.items.iter().all(|i| !i.is_context);
        for it in &step.items {
            s.on_step_done(it.id, it.needs_logits.then_some(7));
        }
        warm += 1;
        if all_gen {
            break;
        }
        assert!(warm < 1000, "never reached steady generation");
    }
    let mut times = Vec::with_capacity(steps);
    let mut tok = 0u32;
    for _ in 0..steps {
        let t = Instant::now();
        let step = s.schedule();
        for it in &step.items {
            tok = tok.wrapping_add(1);
            s.on_step_done(it.id, Some(tok % 32_000));
        }
        times.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(step.items.len(), REQUESTS as usize);
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    let (free, used, total) = s.kv_block_counts();
    println!(
        "scheduler_overhead: {REQUESTS} generation requests, {steps} steps after {warm} prefill steps"
    );
    println!(
        "  schedule()+on_step_done per step: mean {mean:.1} us, p99 {p99:.1} us, max {:.1} us",
        times[times.len() - 1]
    );
    println!("  kv blocks: free {free}, used {used}, total {total}");
}
