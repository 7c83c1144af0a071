//! `bitconv bench` on the tiny reference file: the JSON report holds what the README promises
//! (prompt and generation rates per kernel, the bytes per token, the weights' read rate and the
//! bound derived from them, where the weights are held), `--baseline` adds the scalar path,
//! bad input exits 2.

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bitconv"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

/// The JSON report of a `bitconv bench` run that must succeed.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let o = bench(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn json_report_is_consistent() {
    let file = "tests/data/tiny/bitnet-cpp/from-fp16/ggml-model-i2_s.gguf";
    let d = bench_json(&[
        file,
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "2",
        "-t",
        "2",
        "--baseline",
        "reference",
        "--bandwidth-mib",
        "16",
        "--json",
    ]);
    let bpt = d["bytes_per_token"].as_f64().unwrap();
    // Two layers of h256/ffn768 I2_S projections, the F16 head and one embedding row.
    let proj = 2.0 * (4.0 * 256.0 * 256.0 + 3.0 * 256.0 * 768.0) / 4.0;
    let head = 1002.0 * 256.0 * 2.0;
    assert!(
        bpt >= proj + head && bpt <= proj + head + 4.0 * 256.0,
        "{bpt}"
    );
    let bw = d["weights_read_bandwidth_bytes_per_s"].as_f64().unwrap();
    let bound = d["tg_bound_tokens_per_s"].as_f64().unwrap();
    assert!(bw > 0.0 && ((bw / bpt) / bound - 1.0).abs() < 1e-9);
    let r = d["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1]["kernel"], "reference");
    for k in r {
        assert_eq!(k["pp"]["samples"].as_array().unwrap().len(), 2);
        assert!(k["pp"]["mean"].as_f64().unwrap() > 0.0);
        let tg = k["tg"]["mean"].as_f64().unwrap();
        let pct = k["tg_percent_of_bound"].as_f64().unwrap();
        assert!((pct - 100.0 * tg / bound).abs() < 1e-6);
    }
    // The weights are a resident copy by default: the projections and the tied head.
    assert_eq!(d["weights_memory"], "resident");
    assert_eq!(d["resident_bytes"].as_f64().unwrap(), proj + head);
}

#[test]
fn mmap_reads_the_weights_in_place() {
    let file = "tests/data/tiny/bitnet-cpp/from-fp16/ggml-model-i2_s.gguf";
    let d = bench_json(&[
        file,
        "-p",
        "0",
        "-n",
        "2",
        "-r",
        "1",
        "--bandwidth-mib",
        "0",
        "--mmap",
        "--json",
    ]);
    assert_eq!(d["weights_memory"], "mapped");
    assert_eq!(d["resident_bytes"], 0);
    assert!(d["resident_huge_page_bytes"].is_null());
}

#[test]
fn forced_reference_and_bad_input() {
    let file = "tests/data/tiny/bitnet-cpp/from-fp16/ggml-model-i2_s.gguf";
    let d = bench_json(&[
        file,
        "-p",
        "4",
        "-n",
        "2",
        "-r",
        "1",
        "--kernel",
        "reference",
        "--bandwidth-mib",
        "16",
        "--json",
    ]);
    assert_eq!(d["results"][0]["kernel"], "reference");
    let o = bench(&["no/such/model.gguf"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no/such/model.gguf"));
}

#[test]
fn against_alternates_files_in_one_process() {
    let file = "tests/data/tiny/bitnet-cpp/from-fp16/ggml-model-i2_s.gguf";
    let other = "tests/data/tiny/llama-cpp/tiny-tq2_0.gguf";
    let d = bench_json(&[
        file,
        "--against",
        other,
        "-p",
        "8",
        "-n",
        "3",
        "-r",
        "2",
        "--bandwidth-mib",
        "16",
        "--json",
    ]);
    let alt = d["alternated"].as_array().unwrap();
    assert_eq!(alt.len(), 2);
    assert_eq!(alt[0]["file"], file);
    assert_eq!(alt[1]["file"], other);
    assert!(alt[1]["model"].as_str().unwrap().contains("TQ2_0"));
    for (test, n) in [("pp", 8), ("tg", 3)] {
        let first = alt[0][test]["mean"].as_f64().unwrap();
        assert_eq!(alt[0][format!("{test}_ratio")].as_f64().unwrap(), 1.0);
        let mean = alt[1][test]["mean"].as_f64().unwrap();
        let ratio = alt[1][format!("{test}_ratio")].as_f64().unwrap();
        assert!(first > 0.0 && mean > 0.0);
        assert!((ratio - mean / first).abs() < 1e-12, "{test}");
        for a in alt {
            assert_eq!(a[test]["tokens"], n);
            assert_eq!(a[test]["samples"].as_array().unwrap().len(), 2);
        }
    }
    // The main report is still there, for FILE alone.
    assert_eq!(d["results"].as_array().unwrap().len(), 1);
    let o = bench(&[
        file,
        "--against",
        "no/such/other.gguf",
        "-p",
        "4",
        "-n",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no/such/other.gguf"));
}
