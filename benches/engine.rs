//! Engine throughput benchmark: multiple-choice scoring and greedy generation with muscle's
//! candle engine on a Hugging Face model folder (see BENCHMARKS.md, "Engine throughput").
//!
//! ```text
//! cargo bench --bench engine -- --model DIR --mc FILE.jsonl --gen FILE.jsonl \
//!     [--batch 8] [--gen-batch 8] [--kernels fused|plain] [--no-prefix-sharing] \
//!     [--tasks mc,gen] [--limit N] [--out details.json]
//! ```
//!
//! MC file: one `{"prompt", "choices", "gold"?}` per line; generation file: one
//! `{"prompt", "max_new_tokens"}` per line. Prints one JSON object (wall times, instances/s,
//! tokens/s, peak RSS from /proc/self/status VmHWM, weight bytes); `--out` also writes every
//! prediction, log-probability and generated id for the agreement check of
//! scripts/bench/engine_bench.py.
//!
//! Token counts (the same for every engine in engine_bench.py): multiple choice counts, for every
//! (context, continuation) request, len(context ids) + len(continuation ids), i.e. the tokens an
//! lm-evaluation-harness style scorer is asked to process, whatever the engine actually computes;
//! generation counts the generated ids (up to and including an EOS, else max_new_tokens).

use std::path::PathBuf;
use std::time::Instant;

use muscle::engine::config::ModelConfig;
use muscle::engine::sampling::SamplingParams;
use muscle::engine::tokenize::TokenizerInfo;
use muscle::engine::types::SampleRequest;
use muscle::engine::{
    BatchConfig, DeviceSpec, EngineConfig, EngineHandle, GenItem, McItem, ModelSpec, RunOptions,
    WeightDtype,
};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct McLine {
    prompt: String,
    choices: Vec<String>,
    #[serde(default)]
    gold: Option<usize>,
}

#[derive(Deserialize)]
struct GenLine {
    prompt: String,
    max_new_tokens: usize,
}

struct Args {
    model: PathBuf,
    mc: Option<PathBuf>,
    gen_file: Option<PathBuf>,
    batch: usize,
    gen_batch: usize,
    fused: bool,
    share: bool,
    tasks: Vec<String>,
    limit: Option<usize>,
    out: Option<PathBuf>,
    device: DeviceSpec,
    dtype: WeightDtype,
    /// Sampled draws per generation prompt after the greedy one (0: greedy only).
    samples: u32,
    temperature: f64,
    top_p: f64,
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench --bench engine -- --model DIR [--mc FILE] [--gen FILE] [--batch N] \
         [--gen-batch N] [--kernels fused|plain] [--no-prefix-sharing] [--tasks mc,gen] \
         [--limit N] [--out FILE] [--device cpu|cuda[:N]] [--dtype f32|bf16|f16] \
         [--samples K] [--temperature T] [--top-p P]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        model: PathBuf::new(),
        mc: None,
        gen_file: None,
        batch: 8,
        gen_batch: 8,
        fused: true,
        share: true,
        tasks: vec!["mc".into(), "gen".into()],
        limit: None,
        out: None,
        device: DeviceSpec::Cpu,
        dtype: WeightDtype::F32,
        samples: 0,
        temperature: 0.7,
        top_p: 0.95,
    };
    let mut it = std::env::args().skip(1);
    let mut model = None;
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--model" => model = Some(PathBuf::from(val())),
            "--mc" | "--dataset" => a.mc = Some(PathBuf::from(val())),
            "--gen" => a.gen_file = Some(PathBuf::from(val())),
            "--batch" => a.batch = val().parse().unwrap_or_else(|_| usage()),
            "--gen-batch" => a.gen_batch = val().parse().unwrap_or_else(|_| usage()),
            "--kernels" => {
                a.fused = match val().as_str() {
                    "fused" => true,
                    "plain" => false,
                    _ => usage(),
                }
            }
            "--no-prefix-sharing" => a.share = false,
            "--tasks" => a.tasks = val().split(',').map(str::to_string).collect(),
            "--limit" => a.limit = Some(val().parse().unwrap_or_else(|_| usage())),
            "--out" => a.out = Some(PathBuf::from(val())),
            "--device" => {
                a.device = match val().as_str() {
                    "cpu" => DeviceSpec::Cpu,
                    "cuda" => DeviceSpec::Cuda(0),
                    other => match other.strip_prefix("cuda:").map(str::parse) {
                        Some(Ok(i)) => DeviceSpec::Cuda(i),
                        _ => usage(),
                    },
                }
            }
            "--dtype" => a.dtype = WeightDtype::parse(&val()).unwrap_or_else(|_| usage()),
            "--samples" => a.samples = val().parse().unwrap_or_else(|_| usage()),
            "--temperature" => a.temperature = val().parse().unwrap_or_else(|_| usage()),
            "--top-p" => a.top_p = val().parse().unwrap_or_else(|_| usage()),
            // `cargo bench` passes --bench to harness-less benches.
            "--bench" => {}
            _ => usage(),
        }
    }
    a.model = model.unwrap_or_else(|| usage());
    a
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &PathBuf, limit: Option<usize>) -> Vec<T> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(limit.unwrap_or(usize::MAX))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// VmHWM (peak resident set) of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    muscle::process::configure();
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let batch = |b: usize| BatchConfig {
        max_batch_size: b.max(1),
        max_batch_tokens: usize::MAX / 2,
    };
    let (engine, _join) = EngineHandle::spawn(EngineConfig {
        fused: args.fused,
        batch: batch(args.batch),
        ..EngineConfig::default()
    })
    .expect("engine");
    let spec = ModelSpec {
        base: args.model.clone(),
        adapter: None,
        dtype: args.dtype,
        device: args.device,
    };
    let info = engine
        .describe_model(args.model.clone())
        .await
        .expect("describe");
    let t0 = Instant::now();
    engine.preload(spec.clone()).await.expect("load");
    let load_s = t0.elapsed().as_secs_f64();
    let rss_after_load = peak_rss();

    let mut summary = json!({
        "engine": "muscle",
        "kernels": if args.fused { "fused" } else { "plain" },
        "prefix_sharing": args.share,
        "parameters": info.parameters,
        "weights_bytes": info.parameters * 4,
        "load_s": load_s,
        "peak_rss_after_load_bytes": rss_after_load,
    });
    let mut details = json!({});

    if args.tasks.iter().any(|t| t == "mc") {
        let path = args.mc.as_ref().unwrap_or_else(|| usage());
        let lines: Vec<McLine> = read_jsonl(path, args.limit);
        let items: Vec<McItem> = lines
            .iter()
            .map(|l| McItem {
                prompt: l.prompt.clone(),
                choices: l.choices.clone(),
                delimiter: Some(" ".into()),
            })
            .collect();
        let opts = RunOptions {
            batch: Some(batch(args.batch)),
            prefix_sharing: args.share,
            ..RunOptions::default()
        };
        // Warm-up (untimed), as for the peers: one instance.
        engine
            .score_multiple_choice(spec.clone(), items[..1].to_vec(), opts.clone())
            .await
            .expect("warm-up");
        let t = Instant::now();
        let res = engine
            .score_multiple_choice(spec.clone(), items, opts)
            .await
            .expect("multiple choice");
        let wall = t.elapsed().as_secs_f64();
        let preds: Vec<usize> = res.iter().map(|r| r.acc_pred).collect();
        let gold: Vec<Option<usize>> = lines.iter().map(|l| l.gold).collect();
        let correct = preds
            .iter()
            .zip(&gold)
            .filter(|(p, g)| Some(**p) == **g)
            .count();
        summary["mc"] = json!({
            "instances": res.len(),
            "requests": res.iter().map(|r| r.logprobs.len()).sum::<usize>(),
            "batch": args.batch,
            "wall_s": wall,
            "instances_per_s": res.len() as f64 / wall,
            "acc": correct as f64 / res.len().max(1) as f64,
        });
        details["mc"] = json!({
            "pred": preds,
            "logprobs": res.iter().map(|r| r.logprobs.clone()).collect::<Vec<_>>(),
        });
    }

    if args.tasks.iter().any(|t| t == "gen") {
        let path = args.gen_file.as_ref().unwrap_or_else(|| usage());
        let lines: Vec<GenLine> = read_jsonl(path, args.limit);
        let items: Vec<GenItem> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| GenItem {
                prompt: l.prompt.clone(),
                max_new_tokens: l.max_new_tokens,
                stop: vec![],
                no_repeat_ngram_size: 0,
                sampling: (args.samples > 0).then(|| SampleRequest {
                    params: SamplingParams {
                        temperature: args.temperature,
                        top_k: None,
                        top_p: args.top_p,
                    },
                    samples: args.samples,
                    seed: 0,
                    side: "new".into(),
                    instance: i.to_string(),
                }),
            })
            .collect();
        let opts = RunOptions {
            batch: Some(batch(args.gen_batch)),
            ..RunOptions::default()
        };
        let mut warm = items[..1].to_vec();
        warm[0].max_new_tokens = 2;
        engine
            .generate(spec.clone(), warm, opts.clone())
            .await
            .expect("warm-up");
        let t = Instant::now();
        let res = engine
            .generate(spec.clone(), items, opts)
            .await
            .expect("generate");
        let wall = t.elapsed().as_secs_f64();
        let tokens: usize = res.iter().map(|r| r.output_ids.len()).sum();
        let sampled_tokens: usize = res
            .iter()
            .flat_map(|r| r.samples.iter().map(|g| g.output_ids.len()))
            .sum();
        summary["gen"] = json!({
            "instances": res.len(),
            "tokens": tokens,
            "samples": args.samples,
            "sampled_tokens": sampled_tokens,
            "prompt_tokens": res.iter().map(|r| r.prompt_ids.len()).sum::<usize>(),
            "batch": args.gen_batch,
            "wall_s": wall,
            "instances_per_s": res.len() as f64 / wall,
            "tokens_per_s": tokens as f64 / wall,
        });
        details["gen"] = json!({
            "output_ids": res.iter().map(|r| r.output_ids.clone()).collect::<Vec<_>>(),
        });
    }

    // Peak memory of the engine's work, read before the bench loads a tokenizer of its own below.
    summary["peak_rss_bytes"] = json!(peak_rss());
    if let Some(mc) = summary.get_mut("mc") {
        // Token count: lm-eval's requests, context + continuation ids per choice, encoded the
        // way lm-eval does (tokenize.rs), outside the timed region.
        let lines: Vec<McLine> = read_jsonl(args.mc.as_ref().unwrap(), args.limit);
        let cfg = ModelConfig::from_dir(&args.model).expect("config");
        let tok = TokenizerInfo::load(&args.model, &cfg).expect("tokenizer");
        let tokens: usize = lines
            .iter()
            .flat_map(|l| l.choices.iter().map(move |c| (l, c)))
            .map(|(l, c)| {
                let (a, b) = tok
                    .encode_pair(&l.prompt, &format!(" {c}"), muscle::engine::Bos::Never)
                    .expect("encode");
                a.len() + b.len()
            })
            .sum();
        let wall = mc["wall_s"].as_f64().unwrap_or(f64::NAN);
        mc["tokens"] = json!(tokens);
        mc["tokens_per_s"] = json!(tokens as f64 / wall);
    }
    if let Some(out) = &args.out {
        std::fs::write(
            out,
            serde_json::to_string(&json!({"summary": summary, "details": details})).unwrap(),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    }
    println!("{summary}");
}
