//! `bitconv fetch REPO --quant TYPE`: download from the Hub into the shared Hugging Face cache,
//! convert, validate.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bitconv::checkpoint::Checkpoint;
use bitconv::convert::{self, ConvertOptions, OutType};
use bitconv::hub::{self, FetchOptions, HubConfig, HubFlags};
use bitconv::quant::absmean::AbsmeanMode;
use bitconv::validate;

use super::progress::Bar;

/// Arguments of `bitconv fetch`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  bitconv fetch --list
  bitconv fetch 1bitLLM/bitnet_b1_58-large --quant i2_s
  bitconv fetch 1bitLLM/bitnet_b1_58-3B --quant tl1 --revision main -o models/3B-tl1.gguf
  HF_HUB_OFFLINE=1 bitconv fetch 1bitLLM/bitnet_b1_58-large   # from the cache only

Files go to the Hugging Face cache shared with Python's huggingface_hub
(HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). Downloads resume
where they stopped and every file is checked against the ETag the Hub gives it: LFS files
against their sha256, the small files stored in git against their git blob id.
Gated or private repos need a token: --token, HF_TOKEN, or `huggingface-cli login`.")]
pub struct Args {
    /// The repository, as owner/name (see --list for the ones bitnet.cpp knows).
    #[arg(required_unless_present = "list")]
    repo: Option<String>,
    /// List the repositories bitnet.cpp knows, with the output types each supports.
    #[arg(long)]
    list: bool,
    /// Output type.
    #[arg(long = "quant", value_enum, default_value = "i2_s", ignore_case = true)]
    quant: OutType,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Output file [default: models/<name>/ggml-model-<type>.gguf, as bitnet.cpp's setup lays
    /// it out].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Skip validation against a golden computed from the downloaded checkpoint.
    #[arg(long)]
    no_validate: bool,
    /// Hub endpoint [env: HF_ENDPOINT] [default: https://huggingface.co].
    #[arg(long)]
    endpoint: Option<String>,
    /// Access token for gated or private repos [env: HF_TOKEN].
    #[arg(long)]
    token: Option<String>,
    /// Cache directory [env: HF_HUB_CACHE].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Use only the cache, no network [env: HF_HUB_OFFLINE].
    #[arg(long)]
    offline: bool,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    downloads: u16,
    /// Hash the files already in the cache again (sha256 or git blob id, as downloads are
    /// checked) and download any that no longer match.
    #[arg(long)]
    verify_cache: bool,
    /// How the absmean is computed: exact, or torch:T to match bitnet.cpp on a T-core machine.
    #[arg(long, default_value = "exact")]
    absmean: AbsmeanMode,
    /// Store the token embedding as F16.
    #[arg(long)]
    quant_embd: bool,
    /// Accept a conversion that cannot be written as asked (TQ1_0/TQ2_0 rows that are not a
    /// multiple of 256 values become F16). Without it, fetch refuses such a request after
    /// reading config.json, before the weights are downloaded.
    #[arg(long)]
    allow_fallback: bool,
    /// The runtime the file is for: bitnet-cpp, bitnet-cpp-2024, llama-cpp [default: the
    /// runtime the output type comes from, llama-cpp for mainline's types, else bitnet-cpp]; a type the target cannot load is refused before the
    /// download.
    #[arg(long, value_name = "RUNTIME")]
    target: Option<bitconv::arch::Target>,
    /// Print one JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bars or messages.
    #[arg(short, long)]
    quiet: bool,
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

/// The plan of every ternary projection from `config.json` alone: printed (unless quiet), and
/// refused when the requested type cannot be written as asked and `--allow-fallback` is not
/// given, or when no layout holds a shape.
fn precheck(config: &std::path::Path, quant: OutType, name: &str, a: &Args) -> anyhow::Result<()> {
    let cfg = bitconv::checkpoint::ModelConfig::from_file(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let mut copts = ConvertOptions::new(quant);
    copts.target = a.target;
    convert::check_target(quant, copts.target()).map_err(anyhow::Error::msg)?;
    let mut lines = Vec::new();
    let mut fallbacks = Vec::new();
    for role in bitconv::checkpoint::config::PROJECTIONS {
        let (m, k) = cfg
            .projection_shape(role)
            .map(|(m, k)| (m as usize, k as usize))
            .expect("every projection has a shape");
        let c = convert::projection_type(quant, &copts, name, m, k).map_err(|e| {
            anyhow::anyhow!(
                "{}: {role} ({m}×{k}) cannot be written as {quant}: {e}",
                config.display()
            )
        })?;
        if c.fallback {
            fallbacks.push(format!("{role} ({m}×{k})"));
        }
        lines.push(format!(
            "  {role:<12} {:<6} {m}×{k}  {}",
            c.ty.name(),
            c.note.unwrap_or_default()
        ));
    }
    if !(a.quiet || a.json) {
        eprintln!(
            "plan from config.json ({} layers, {quant}):\n{}",
            cfg.num_layers,
            lines.join("\n")
        );
    }
    anyhow::ensure!(
        fallbacks.is_empty() || a.allow_fallback,
        "{}: {quant} cannot be written as asked for {} (written as F16 instead); nothing was \
         downloaded beyond the small files. Pass --allow-fallback to accept, or choose another \
         --quant ({})",
        config.display(),
        fallbacks.join(", "),
        bitconv::convert::OUT_TYPES
            .iter()
            .filter(|t| t.is_ternary() && t.row_block().is_none())
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

pub fn run(a: Args) -> super::Outcome {
    if a.list {
        return list(a.json);
    }
    super::init_threads(a.threads)?;
    let repo = a.repo.clone().expect("clap requires REPO without --list");
    let flags = HubFlags {
        endpoint: a.endpoint.clone(),
        token: a.token.clone(),
        cache_dir: a.cache_dir.clone(),
        offline: a.offline,
    };
    let cfg = HubConfig::resolve(&flags, &hub::process_env).context("Hub configuration")?;
    let t0 = Instant::now();
    let opts = FetchOptions {
        quiet: a.quiet || a.json,
        progress: !(a.quiet || a.json),
        verify_cached: a.verify_cache,
        downloads: usize::from(a.downloads),
        ..FetchOptions::default()
    };
    let name = hub::find_known(&repo)
        .map(|k| k.local_name.to_string())
        .unwrap_or_else(|| repo.rsplit('/').next().unwrap_or(&repo).to_string());
    // The small files first: the plan is checked before gigabytes of weights move.
    let small = FetchOptions {
        filter: std::sync::Arc::new(|p: &str| {
            hub::conversion_files(p) && !p.ends_with(".safetensors")
        }),
        ..opts.clone()
    };
    let pre = hub::snapshot(&cfg, &repo, &a.revision, &small)?;
    precheck(&pre.dir.join("config.json"), a.quant, &name, &a)?;
    let snap = hub::snapshot(&cfg, &repo, &a.revision, &opts)?;
    let t_download = t0.elapsed().as_secs_f64();

    let out = a.output.clone().unwrap_or_else(|| {
        PathBuf::from("models")
            .join(&name)
            .join(format!("ggml-model-{}.gguf", a.quant.name()))
    });
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }

    let ck = Checkpoint::open(&snap.dir).with_context(|| {
        format!(
            "cannot read the downloaded checkpoint {}",
            snap.dir.display()
        )
    })?;
    let mut copts = ConvertOptions::new(a.quant);
    copts.target = a.target;
    copts.absmean = a.absmean;
    copts.quant_embd = a.quant_embd;
    // bitnet.cpp names its kernel tables and general.name after the local model directory.
    copts.model_name = Some(name.clone());
    copts.general_name = Some(name.clone());
    let plan = convert::plan(&ck, &copts).with_context(|| format!("cannot convert {repo}"))?;
    let t1 = Instant::now();
    let bar = Bar::bytes(ck.tensors.total_bytes(), a.quiet || a.json, "converting");
    let summary = convert::write(&ck, &plan, &copts, &out, &bar)
        .with_context(|| format!("cannot convert {repo}"))?;
    bar.finish();
    let t_convert = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let report = if a.no_validate {
        None
    } else {
        Some(
            validate::check_conversion(&snap.dir, &out, &plan.kernel_entries)
                .with_context(|| format!("cannot validate {} against {repo}", out.display()))?,
        )
    };
    let t_validate = t2.elapsed().as_secs_f64();
    let sha = bitconv::util::sha256_file(&out)
        .with_context(|| format!("cannot read {}", out.display()))?;
    let downloaded: u64 = snap
        .files
        .iter()
        .filter(|f| !f.from_cache)
        .map(|f| f.size)
        .sum();
    let pass = report.as_ref().is_none_or(|r| r.pass);

    if a.json {
        super::print_json(&serde_json::json!({
            "repo": repo, "revision": a.revision, "commit": snap.commit,
            "snapshot": snap.dir.display().to_string(),
            "files": snap.files.iter().map(|f| serde_json::json!({
                "path": f.path, "size": f.size, "sha256": f.sha256, "from_cache": f.from_cache,
            })).collect::<Vec<_>>(),
            "downloaded_bytes": downloaded,
            "output": out.display().to_string(), "out_type": a.quant.name(),
            "target": plan.target.name(),
            "runtimes": super::convert::runtimes_of(&out),
            "output_bytes": summary.bytes, "output_sha256": sha,
            "validation": report.as_ref().map(|r| serde_json::to_value(r).unwrap_or_default()),
            "pass": pass,
            "seconds": {"download": t_download, "convert": t_convert, "validate": t_validate},
        }))?;
    } else {
        println!(
            "{repo} @ {} ({})",
            a.revision,
            &snap.commit[..12.min(snap.commit.len())]
        );
        for f in &snap.files {
            println!(
                "  {:<36} {:>14} {}",
                f.path,
                f.size,
                if f.from_cache { "cached" } else { "downloaded" }
            );
        }
        println!(
            "output: {} ({} for {}, {:.1} MB, sha256 {})",
            out.display(),
            a.quant,
            plan.target,
            summary.bytes as f64 / 1e6,
            &sha[..16]
        );
        println!("runtimes:");
        for l in bitconv::gguf::compat::lines(&super::convert::runtimes_of(&out)) {
            println!("  {l}");
        }
        if let Some(r) = &report {
            super::validate::print_report(r, false)?;
        }
        println!(
            "time: download {t_download:.1}s, convert {t_convert:.1}s, validate {t_validate:.1}s ({} bytes downloaded)",
            downloaded
        );
    }
    Ok(pass)
}

fn list(json: bool) -> super::Outcome {
    let repos = hub::known_repos();
    if json {
        super::print_json(&serde_json::json!(repos
            .iter()
            .map(|k| serde_json::json!({
                "repo": k.repo, "local_name": k.local_name, "family": k.family,
                "output_types": k.output_types(), "note": k.note,
            }))
            .collect::<Vec<_>>()))?;
        return Ok(true);
    }
    println!("Repositories bitnet.cpp knows (bitconv fetch REPO --quant TYPE):\n");
    println!("  {:<44} {:<28} output types", "repository", "family");
    for k in repos {
        println!(
            "  {:<44} {:<28} {}",
            k.repo,
            k.family,
            k.output_types().join(" ")
        );
        if !k.note.is_empty() {
            println!("  {:<44} {}", "", k.note);
        }
    }
    println!("\nAny other repository with a ternary checkpoint works too; `bitconv inspect DIR` on a local copy says which types apply.");
    Ok(true)
}
