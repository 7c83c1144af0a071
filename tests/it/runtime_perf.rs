//! Decode speed of the reference runtime on a random model with the shapes of
//! `1bitLLM/bitnet_b1_58-large` (hidden 1536, FFN 4096, 24 layers, 16 heads, vocab 32002, I2_S
//! projections, F16 embedding). Not a pass/fail test: run it with
//! `cargo test --release --test it runtime_perf:: -- --ignored --nocapture`.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

use bitconv::gguf::{GgmlType, GgufWriter, TensorSpec, Value};
use bitconv::quant::layouts::i2s;
use bitconv::runtime::{argmax, LoadOptions, LogitsWanted, Model, Session};
use half::f16;

use crate::common::{self, rng::Rng};

/// Shapes of a random BitNet model.
#[derive(Clone, Copy)]
struct Shape {
    n_embd: usize,
    n_ff: usize,
    n_layer: usize,
    n_head: usize,
    n_vocab: usize,
}

/// Writes a random `bitnet` model: I2_S projections (random codes, scale about 0.1), norms
/// about 1.0, an F16 embedding about N(0, 0.02).
fn write_random_bitnet(path: &Path, s: Shape, seed: u64) {
    let mut rng = Rng(seed | 1);
    let a = "bitnet";
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.name".into(), Value::String("random".into())),
    ];
    kv.extend(common::hparams_kv(
        a,
        &common::Hparams {
            n_layer: s.n_layer,
            n_ctx: 2048,
            n_embd: s.n_embd,
            n_ff: s.n_ff,
            n_head: s.n_head,
            n_head_kv: s.n_head,
            rope_base: 10000.0,
        },
    ));
    kv.push(("general.file_type".into(), Value::U32(40)));
    kv.push((format!("{a}.vocab_size"), Value::U32(s.n_vocab as u32)));
    let (e, f) = (s.n_embd as u64, s.n_ff as u64);
    let mut specs = vec![TensorSpec {
        name: "token_embd.weight".into(),
        dims: vec![e, s.n_vocab as u64],
        ty: GgmlType::F16,
    }];
    let norm = |name: String, n: u64| TensorSpec {
        name,
        dims: vec![n],
        ty: GgmlType::F32,
    };
    let mat = |name: String, k: u64, m: u64| TensorSpec {
        name,
        dims: vec![k, m],
        ty: GgmlType::I2_S,
    };
    for i in 0..s.n_layer {
        let n = |t: &str| format!("blk.{i}.{t}.weight");
        specs.push(norm(n("attn_norm"), e));
        specs.push(mat(n("attn_q"), e, e));
        specs.push(mat(n("attn_k"), e, e));
        specs.push(mat(n("attn_v"), e, e));
        specs.push(mat(n("attn_output"), e, e));
        specs.push(norm(n("attn_sub_norm"), e));
        specs.push(norm(n("ffn_norm"), e));
        specs.push(mat(n("ffn_gate"), e, f));
        specs.push(mat(n("ffn_up"), e, f));
        specs.push(mat(n("ffn_down"), f, e));
        specs.push(norm(n("ffn_sub_norm"), f));
    }
    specs.push(norm("output_norm.weight".into(), e));
    let mut w = GgufWriter::new(
        BufWriter::new(File::create(path).unwrap()),
        &kv,
        specs.clone(),
    )
    .unwrap();
    for spec in &specs {
        let n = spec.dims.iter().product::<u64>() as usize;
        let bytes: Vec<u8> = match spec.ty {
            GgmlType::F16 => (0..n)
                .flat_map(|_| f16::from_f32(0.02 * rng.normal()).to_le_bytes())
                .collect(),
            GgmlType::F32 => (0..n)
                .flat_map(|_| (1.0 + 0.05 * rng.normal()).to_le_bytes())
                .collect(),
            GgmlType::I2_S => {
                let codes: Vec<i8> = (0..n).map(|_| (rng.next() % 3) as i8 - 1).collect();
                let mut out = vec![0u8; i2s::nbytes(n, 1)];
                i2s::pack_into(&codes, 0.1 + 0.01 * rng.uniform(), &mut out).unwrap();
                out
            }
            _ => unreachable!(),
        };
        w.write_tensor(&spec.name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
#[ignore = "builds a 0.7B model (about 270 MB) and measures speed; run with --ignored"]
fn decode_speed_bitnet_large_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random-large-i2_s.gguf");
    let shape = Shape {
        n_embd: 1536,
        n_ff: 4096,
        n_layer: 24,
        n_head: 16,
        n_vocab: 32002,
    };
    let t0 = Instant::now();
    write_random_bitnet(&path, shape, 42);
    eprintln!("wrote {} in {:.1?}", path.display(), t0.elapsed());
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    eprintln!("heap bytes besides the map: {}", model.heap_bytes());
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut s = Session::new(&model, 256);
            let prompt = [1u32, 450, 4996, 17354, 1701, 29916];
            let t = Instant::now();
            let mut last = s.forward(&prompt, LogitsWanted::Last).unwrap().remove(0);
            eprintln!(
                "{threads} thread(s): prompt of {} tokens in one batch: {:.1?}",
                prompt.len(),
                t.elapsed()
            );
            let n = 16;
            let t = Instant::now();
            for _ in 0..n {
                let id = argmax(&last) as u32;
                last = s.forward(&[id], LogitsWanted::Last).unwrap().remove(0);
            }
            let dt = t.elapsed().as_secs_f64();
            eprintln!(
                "{threads} thread(s): decode {n} tokens in {dt:.2} s = {:.2} tokens/s",
                n as f64 / dt
            );
        });
    }
}
