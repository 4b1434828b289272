//! The example's hot paths: CPU in `hash_loop`, allocations in `alloc_loop`. Also compiled into
//! the official agent's variant of the overhead benchmark (sdk/rust/bench-official), so that
//! both profile the same code.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

#[inline(never)]
pub fn hash_loop(d: Duration) {
    let end = Instant::now() + d;
    let mut data = vec![0u8; 4096];
    while Instant::now() < end {
        let sum = Sha256::digest(&data);
        data[0] = sum[0];
    }
    black_box(&data);
}

#[inline(never)]
pub fn alloc_loop(d: Duration) {
    let end = Instant::now() + d;
    let mut keep: Vec<Vec<u8>> = Vec::new();
    while Instant::now() < end {
        keep.push(vec![1u8; 16 << 10]);
        if keep.len() > 256 {
            keep.clear();
        }
    }
    black_box(&keep);
}
