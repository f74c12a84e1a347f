//! Runs a list of requests through the in-process executor with given arrival times and a
//! concurrency cap, timing every output piece as the executor releases it.

use host_runtime::executor::{Executor, FinishReason, Output, Request};
use host_runtime::sampling::SamplingParams;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What one request did (times from its own submission).
#[derive(Clone, Debug, Default)]
pub struct RequestResult {
    /// `None` when it completed; else why it failed.
    pub error: Option<String>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// Time to the first output token.
    pub ttft: Option<Duration>,
    /// Time to the end.
    pub latency: Duration,
    /// Gaps between successive token-bearing output pieces.
    pub itl: Vec<Duration>,
}

/// Greedy, `ignore_eos`, exactly `max_new_tokens` new tokens.
pub fn bench_sampling(max_new_tokens: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_new_tokens, ignore_eos: true, seed: Some(0), ..Default::default() }
}

struct Piece {
    index: usize,
    at: Instant,
    tokens: usize,
    finish: Option<FinishReason>,
}

/// Runs `requests` (prompt, output length); request `i` is submitted at `t0 + arrivals[i]`
/// (or later, while `concurrency` requests are in flight). Returns the results in request
/// order and the time from the start to the last finish.
pub fn run(executor: &Executor, requests: &[(Vec<u32>, usize)], arrivals: &[Duration], concurrency: Option<usize>) -> (Vec<RequestResult>, Duration) {
    let n = requests.len();
    let cap = concurrency.unwrap_or(usize::MAX).max(1);
    let (tx, rx) = mpsc::channel::<Piece>();
    let mut results = vec![RequestResult::default(); n];
    let mut start = vec![None::<Instant>; n];
    let mut last = vec![None::<Instant>; n];
    let (mut next, mut inflight, mut done) = (0usize, 0usize, 0usize);
    let t0 = Instant::now();
    let mut end = t0;
    while done < n {
        let now = Instant::now();
        while next < n && inflight < cap && t0 + arrivals[next] <= now {
            let (prompt, out_len) = &requests[next];
            let index = next;
            let tx = tx.clone();
            let sink = move |o: Output| tx.send(Piece { index, at: Instant::now(), tokens: o.token_ids.len(), finish: o.finish }).is_ok();
            results[index].prompt_tokens = prompt.len();
            let t = Instant::now();
            start[index] = Some(t);
            match executor.submit_to(Request { prompt: prompt.clone(), sampling: bench_sampling(*out_len) }, Box::new(sink)) {
                Ok(_) => inflight += 1,
                Err(e) => {
                    results[index].error = Some(format!("refused: {e}"));
                    done += 1;
                }
            }
            next += 1;
        }
        let wait = if next < n && inflight < cap { (t0 + arrivals[next]).saturating_duration_since(Instant::now()) } else { Duration::from_millis(500) };
        match rx.recv_timeout(wait) {
            Ok(p) => {
                let r = &mut results[p.index];
                let s = start[p.index].unwrap_or(t0);
                if p.tokens > 0 {
                    if r.ttft.is_none() {
                        r.ttft = Some(p.at - s);
                    }
                    if let Some(prev) = last[p.index] {
                        r.itl.push(p.at - prev);
                    }
                    last[p.index] = Some(p.at);
                    r.output_tokens += p.tokens;
                }
                if let Some(f) = p.finish {
                    r.latency = p.at - s;
                    match f {
                        FinishReason::Stop | FinishReason::Length => {}
                        other => r.error = Some(format!("finished with {}", other.as_str())),
                    }
                    end = end.max(p.at);
                    inflight -= 1;
                    done += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !executor.is_alive() {
                    for r in results.iter_mut().filter(|r| r.error.is_none() && r.latency.is_zero()) {
                        r.error = Some("the executor stopped".into());
                    }
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    (results, end.saturating_duration_since(t0))
}
