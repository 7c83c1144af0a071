//! Steady-state decoding allocates nothing: after a warm-up, `Session::forward_borrowed` for
//! one token at a time makes no heap allocation on any thread, with every kernel table this
//! CPU runs. (A separate test binary, because it installs a counting global allocator.)
//!
//! With one worker thread the count must be exactly zero. With two, a worker may run some
//! kind of task (say one head's attention) for the first time after the warm-up, and its
//! per-thread scratch buffer then grows once; so the two-thread check allows a few such
//! first uses, far fewer than one per token.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use bitconv::runtime::kernels as simd;
use bitconv::runtime::{LoadOptions, LogitsWanted, Model, Session};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn decode_allocations(rel: &str, threads: usize, steps: u32, allowed: usize) {
    let model = Model::load(
        &Path::new("tests/data/tiny").join(rel),
        &LoadOptions::default(),
    )
    .unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    for k in simd::available() {
        pool.install(|| {
            let mut s = Session::new(&model, 96);
            s.set_kernels(k);
            // Warm-up: a batched prompt, then steps (buffers and thread-local scratch grow).
            s.forward_borrowed(&[1, 275, 376, 265], LogitsWanted::Last)
                .unwrap();
            for t in 0..4 {
                s.forward_borrowed(&[300 + t], LogitsWanted::Last).unwrap();
            }
            let before = ALLOCS.load(Ordering::Relaxed);
            for t in 0..steps {
                let logits = s.forward_borrowed(&[400 + t], LogitsWanted::Last).unwrap();
                assert_eq!(logits.len(), model.hparams().n_vocab);
            }
            let n = ALLOCS.load(Ordering::Relaxed) - before;
            eprintln!(
                "{rel} {} ({threads} threads): {n} allocations in {steps} decode steps",
                k.name()
            );
            assert!(
                n <= allowed,
                "{rel}: {} made {n} allocations in {steps} decode steps",
                k.name()
            );
        });
    }
}

const FILES: [&str; 3] = [
    "bitnet-cpp/from-fp16/ggml-model-i2_s.gguf",
    "llama-cpp/tiny-tq2_0.gguf",
    "bitnet-cpp/from-fp16/ggml-model-f32.gguf",
];

#[test]
fn decoding_allocates_nothing() {
    for f in FILES {
        // One worker: exactly none.
        decode_allocations(f, 1, 16, 0);
        // Two workers: which worker first runs which task is up to the scheduler, so a
        // thread-local scratch buffer may still grow once on its first use after the warm-up
        // (0–2 seen per run; more under load). One allocation per token would be 64 here.
        decode_allocations(f, 2, 64, 16);
    }
}
