//! Arbitrary bytes as a scheduler configuration and a sequence of executor operations
//! (submit, beam-group submit, follow-up, duplicate submit, step with random sampled tokens
//! and random beam reorders, finish, cancel, finish-when-done), decoded by
//! `host_runtime::scheduler::harness::decode`. After every operation the scheduler's
//! invariants, the step's limits and the shadow KV contents (swaps and beam block copies
//! applied) are checked (the same checks as the property tests); at the end every request
//! is ended and every block must be free. Run: `cargo +nightly fuzz run scheduler_ops` from `fuzz/`.
#![no_main]

use host_runtime::scheduler::harness::run_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = run_bytes(data) {
        panic!("scheduler invariant violated: {e}");
    }
});
