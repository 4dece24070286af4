//! Engine tests on tiny handmade models: fused vs plain kernels, batch independence, KV-cache
//! generation, LoRA merging, refusal of bad adapters, the model cache and the engine thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use muscle::engine::scoring::last_logits;
use muscle::engine::*;

use super::helpers::*;

fn tiny_model(name: &str) -> (PathBuf, HashMap<String, Tensor>) {
    let dir = temp_dir(name);
    let w = tiny_weights(&Tiny::default());
    write_model(&dir, &Tiny::default(), &w);
    (dir, w)
}

fn load(base: &Path, adapter: Option<&Path>, fused: bool) -> Result<LoadedModel> {
    LoadedModel::load(
        &ModelSpec::cpu_f32(base, adapter.map(Path::to_path_buf)),
        fused,
    )
}

const SENTENCES: &[&str] = &[
    "the cat sat on the mat",
    "a red dog",
    "Question: is the cat big Answer:",
    "one two three four five six one two three four five six the dog was very small and not blue",
    "it",
    "the blue cat and the green dog sat on a red mat",
];

fn ll_requests(n: usize) -> Vec<LlRequest> {
    (0..n)
        .map(|i| {
            let ctx = SENTENCES[i % SENTENCES.len()];
            let cont = [" yes", " no it was", " the red mat", " green"][i % 4];
            let ctx = if i % 3 == 0 {
                format!("{ctx} ")
            } else {
                ctx.to_string()
            };
            LlRequest {
                context: ctx,
                continuation: cont.trim_start().to_string(),
            }
        })
        .collect()
}

fn ll(m: &LoadedModel, reqs: &[LlRequest], batch: BatchConfig) -> Vec<LlResult> {
    scoring::loglikelihood(m, reqs, batch, &RunOptions::default(), &mut |_, _| {}).unwrap()
}

use muscle::engine::scoring;

#[test]
fn fused_and_plain_paths_agree() {
    let (dir, _) = tiny_model("fused");
    let plain = load(&dir, None, false).unwrap();
    let fused = load(&dir, None, true).unwrap();
    let ids: Vec<u32> = (3..30).collect();
    let a = last_logits(&plain.decoder, &ids).unwrap();
    let b = last_logits(&fused.decoder, &ids).unwrap();
    let d = max_abs_diff(&a, &b);
    println!("fused vs plain last-logit max abs diff {d:e}");
    assert!(d < 1e-5, "{d}");
    let reqs = ll_requests(12);
    let big = BatchConfig {
        max_batch_tokens: 10_000,
        max_batch_size: 32,
    };
    for (x, y) in ll(&plain, &reqs, big).iter().zip(ll(&fused, &reqs, big)) {
        assert!(
            (x.logprob - y.logprob).abs() < 1e-5,
            "{} vs {}",
            x.logprob,
            y.logprob
        );
    }
}

#[test]
fn results_do_not_depend_on_the_batch() {
    let (dir, _) = tiny_model("batch");
    let m = load(&dir, None, true).unwrap();
    let reqs = ll_requests(40);
    let one = ll(
        &m,
        &reqs,
        BatchConfig {
            max_batch_tokens: 10_000,
            max_batch_size: 1,
        },
    );
    let many = ll(
        &m,
        &reqs,
        BatchConfig {
            max_batch_tokens: 10_000,
            max_batch_size: 32,
        },
    );
    let mut worst = 0f64;
    for (a, b) in one.iter().zip(&many) {
        worst = worst.max((a.logprob - b.logprob).abs());
        assert_eq!(a.is_greedy, b.is_greedy);
        assert_eq!(a.continuation_ids, b.continuation_ids);
    }
    println!("batch 1 vs 32 loglikelihood max abs diff {worst:e}");
    assert!(worst < 1e-4, "{worst}");
    // Whitespace rule: the trailing space of the context moved to the continuation.
    assert!(reqs[0].context.ends_with(' '));
    assert!(!one[0].context_ids.is_empty() && !one[0].continuation_ids.is_empty());

    let items: Vec<GenItem> = SENTENCES
        .iter()
        .enumerate()
        .map(|(i, s)| GenItem {
            prompt: s.to_string(),
            max_new_tokens: 3 + i,
            stop: vec![],
            no_repeat_ngram_size: 0,
            sampling: None,
        })
        .collect();
    let opts = RunOptions::default();
    let g1 = generate::generate(
        &m,
        &items,
        BatchConfig {
            max_batch_tokens: 10_000,
            max_batch_size: 1,
        },
        &opts,
    )
    .unwrap();
    let g8 = generate::generate(
        &m,
        &items,
        BatchConfig {
            max_batch_tokens: 10_000,
            max_batch_size: 8,
        },
        &opts,
    )
    .unwrap();
    assert_eq!(g1, g8);
}

#[test]
fn kv_cache_generation_matches_full_recompute() {
    let (dir, _) = tiny_model("kv");
    let m = load(&dir, None, false).unwrap();
    let item = GenItem {
        prompt: "the cat sat on".into(),
        max_new_tokens: 8,
        stop: vec![],
        no_repeat_ngram_size: 0,
        sampling: None,
    };
    let g = generate::generate(
        &m,
        std::slice::from_ref(&item),
        BatchConfig::default(),
        &RunOptions::default(),
    )
    .unwrap()
    .remove(0);
    let mut ids = g.prompt_ids.clone();
    let mut out = Vec::new();
    for _ in 0..8 {
        let l = last_logits(&m.decoder, &ids).unwrap();
        let next = l
            .iter()
            .enumerate()
            .fold(0, |b, (i, x)| if *x > l[b] { i } else { b }) as u32;
        out.push(next);
        ids.push(next);
        if next == 2 {
            break;
        }
    }
    assert_eq!(g.output_ids, out);
    assert_eq!(g.text, m.tokenizer.decode(&out).unwrap());
}

#[test]
fn stop_strings_cut_the_output() {
    let (dir, _) = tiny_model("stop");
    let m = load(&dir, None, true).unwrap();
    let free = GenItem {
        prompt: "the cat".into(),
        max_new_tokens: 6,
        stop: vec![],
        no_repeat_ngram_size: 0,
        sampling: None,
    };
    let g =
        generate::generate(&m, &[free], BatchConfig::default(), &RunOptions::default()).unwrap();
    let words: Vec<&str> = g[0].text.split(' ').collect();
    if g[0].finish == FinishReason::Length && words.len() >= 3 {
        let stop = words[1].to_string();
        let it = GenItem {
            prompt: "the cat".into(),
            max_new_tokens: 6,
            stop: vec![stop.clone()],
            no_repeat_ngram_size: 0,
            sampling: None,
        };
        let s =
            generate::generate(&m, &[it], BatchConfig::default(), &RunOptions::default()).unwrap();
        assert_eq!(s[0].finish, FinishReason::Stop);
        assert_eq!(s[0].text, g[0].text[..g[0].text.find(&stop).unwrap()]);
    }
}

fn lora_pair(w: &HashMap<String, Tensor>, module: &str, r: usize, seed: u64) -> (Tensor, Tensor) {
    let (out, inp) = w[&format!("{module}.weight")].dims2().unwrap();
    (det(&[r, inp], seed, 0.5), det(&[out, r], seed + 7, 0.5))
}

#[test]
fn lora_merge_matches_merged_weights() {
    let (dir, w) = tiny_model("lora");
    for (rslora, scaling) in [(false, 4.0 / 2.0), (true, 4.0 / 2f64.sqrt())] {
        let mods = [
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.mlp.down_proj",
            "lm_head",
        ];
        let mut tensors = HashMap::new();
        let mut merged = w.clone();
        for (k, m) in mods.iter().enumerate() {
            let (a, b) = lora_pair(&w, m, 2, 100 + k as u64);
            let key = format!("{m}.weight");
            merged.insert(
                key.clone(),
                (&w[&key] + (b.matmul(&a).unwrap() * scaling).unwrap()).unwrap(),
            );
            tensors.insert(format!("base_model.model.{m}.lora_A.weight"), a);
            tensors.insert(format!("base_model.model.{m}.lora_B.weight"), b);
        }
        let ad = dir.join(format!("adapter-{rslora}"));
        write_adapter(
            &ad,
            serde_json::json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_rslora": rslora,
                "target_modules": ["q_proj", "down_proj", "lm_head"], "bias": "none"}),
            &tensors,
        );
        let mdir = dir.join(format!("merged-{rslora}"));
        write_model(&mdir, &Tiny::default(), &merged);
        let ids: Vec<u32> = (3..20).collect();
        let with_adapter =
            last_logits(&load(&dir, Some(&ad), true).unwrap().decoder, &ids).unwrap();
        let reference = last_logits(&load(&mdir, None, true).unwrap().decoder, &ids).unwrap();
        let base = last_logits(&load(&dir, None, true).unwrap().decoder, &ids).unwrap();
        assert!(max_abs_diff(&with_adapter, &reference) < 1e-5);
        assert!(
            max_abs_diff(&with_adapter, &base) > 1e-3,
            "adapter must change the model"
        );
    }
}

#[test]
fn bad_adapters_are_refused_with_a_clear_message() {
    let (dir, w) = tiny_model("badlora");
    let q = "model.layers.0.self_attn.q_proj";
    let (a, b) = lora_pair(&w, q, 2, 5);
    let good = |extra: &[(&str, Tensor)]| {
        let mut t = HashMap::from([
            (format!("base_model.model.{q}.lora_A.weight"), a.clone()),
            (format!("base_model.model.{q}.lora_B.weight"), b.clone()),
        ]);
        for (k, v) in extra {
            t.insert(k.to_string(), v.clone());
        }
        t
    };
    let cfg = serde_json::json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "bias": "none"});
    let with = |k: &str, v: serde_json::Value| {
        let mut c = cfg.clone();
        c[k] = v;
        c
    };
    let cases: Vec<(&str, serde_json::Value, HashMap<String, Tensor>, &str)> = vec![
        ("dora", with("use_dora", true.into()), good(&[]), "use_dora"),
        (
            "mts",
            with("modules_to_save", serde_json::json!(["lm_head"])),
            good(&[]),
            "modules_to_save",
        ),
        ("bias", with("bias", "lora_only".into()), good(&[]), "bias"),
        (
            "unmapped",
            cfg.clone(),
            good(&[
                (
                    "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight",
                    a.clone(),
                ),
                (
                    "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight",
                    b.clone(),
                ),
            ]),
            "model.layers.7.self_attn.q_proj",
        ),
        (
            "shape",
            cfg.clone(),
            HashMap::from([
                (
                    format!("base_model.model.{q}.lora_A.weight"),
                    det(&[2, 17], 1, 0.1),
                ),
                (format!("base_model.model.{q}.lora_B.weight"), b.clone()),
            ]),
            "shape mismatch",
        ),
        (
            "embedding",
            with(
                "target_modules",
                serde_json::json!(["q_proj", "embed_tokens"]),
            ),
            good(&[(
                "base_model.model.model.embed_tokens.lora_embedding_A",
                det(&[2, 32], 1, 0.1),
            )]),
            "embedding LoRA",
        ),
        (
            "untargeted",
            cfg.clone(),
            good(&[
                (
                    "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
                    a.clone(),
                ),
                (
                    "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight",
                    det(&[48, 2], 1, 0.1),
                ),
            ]),
            "target_modules",
        ),
    ];
    for (name, c, t, needle) in cases {
        let ad = dir.join(format!("bad-{name}"));
        write_adapter(&ad, c, &t);
        let e = load(&dir, Some(&ad), true)
            .err()
            .unwrap_or_else(|| panic!("{name} was accepted"));
        let msg = e.to_string();
        println!("{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg}");
        assert!(matches!(e, EngineError::Adapter { .. }), "{name}: {e:?}");
    }
}

#[test]
fn missing_tensor_and_unknown_architecture_are_named() {
    let (dir, mut w) = tiny_model("missing");
    w.remove("model.layers.1.mlp.up_proj.weight");
    write_model(&dir, &Tiny::default(), &w);
    let e = load(&dir, None, true).err().unwrap().to_string();
    assert!(e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("LlamaForCausalLM", "GPT2LMHeadModel");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let e = load(&dir, None, true).err().unwrap().to_string();
    assert!(
        e.contains("GPT2LMHeadModel") && e.contains("Phi3ForCausalLM"),
        "{e}"
    );
}

#[test]
fn multiple_choice_scores_every_choice() {
    let (dir, _) = tiny_model("mc");
    let m = load(&dir, None, true).unwrap();
    let item = McItem {
        prompt: "Question: is the cat big Answer:".into(),
        choices: vec!["yes".into(), "no".into(), "very big".into()],
        delimiter: None,
    };
    let r = scoring::multiple_choice(
        &m,
        std::slice::from_ref(&item),
        BatchConfig::default(),
        &RunOptions::default(),
    )
    .unwrap()
    .remove(0);
    let reqs: Vec<LlRequest> = item
        .choices
        .iter()
        .map(|c| LlRequest {
            context: item.prompt.clone(),
            continuation: format!(" {c}"),
        })
        .collect();
    let l = ll(&m, &reqs, BatchConfig::default());
    for (a, b) in r.logprobs.iter().zip(&l) {
        assert!((a - b.logprob).abs() < 1e-4);
    }
    let expect = McResult::from_scores(&item.choices, r.logprobs.clone(), r.is_greedy.clone());
    assert_eq!(r, expect);
    // Ties go to the lowest index; acc_norm divides by characters.
    let t = McResult::from_scores(
        &["ab".into(), "a".into(), "abcd".into()],
        vec![-2.0, -2.0, -3.0],
        vec![false; 3],
    );
    assert_eq!((t.acc_pred, t.acc_norm_pred), (0, 2));
}

#[tokio::test]
async fn engine_thread_caches_models_and_reports_progress() {
    let (dir, w) = tiny_model("handle");
    let q = "model.layers.0.self_attn.q_proj";
    let (a, b) = lora_pair(&w, q, 2, 9);
    let ad = dir.join("ad");
    write_adapter(
        &ad,
        serde_json::json!({"r": 2, "lora_alpha": 2, "target_modules": "model\\.layers\\.0\\.self_attn\\.q_proj"}),
        &HashMap::from([
            (format!("base_model.model.{q}.lora_A.weight"), a),
            (format!("base_model.model.{q}.lora_B.weight"), b),
        ]),
    );
    let loads = Arc::new(Mutex::new(Vec::new()));
    let l2 = loads.clone();
    let model_bytes = load(&dir, None, true).unwrap().bytes();
    // Room for one model only: loading a second evicts the first.
    let cache = ModelCache::with_loader(
        model_bytes + model_bytes / 2,
        Box::new(move |s| {
            l2.lock().unwrap().push(s.clone());
            LoadedModel::load(s, true)
        }),
    );
    // A budget the model cannot fit is refused from the headers, before anything is read.
    let mut small = ModelCache::with_loader(
        model_bytes / 2,
        Box::new(|_| panic!("the loader must not run for a model over the budget")),
    );
    let refused = small.get(&ModelSpec::cpu_f32(&dir, None)).err().unwrap();
    assert!(
        matches!(refused, EngineError::OverBudget { needed, .. } if needed == model_bytes),
        "{refused}"
    );
    assert_eq!(small.stats().loads, 0);

    let (h, _join) = EngineHandle::spawn_with_cache(EngineConfig::default(), cache).unwrap();
    let base = ModelSpec::cpu_f32(&dir, None);
    let adapted = ModelSpec::cpu_f32(&dir, Some(ad.clone()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reqs = ll_requests(10);
    let opts = RunOptions {
        batch: Some(BatchConfig {
            max_batch_tokens: 64,
            max_batch_size: 3,
        }),
        ..Default::default()
    };
    let r1 = h
        .loglikelihood(base.clone(), reqs.clone(), opts.clone(), Some(tx))
        .await
        .unwrap();
    let mut seen: Vec<(usize, LlResult)> = Vec::new();
    while let Ok(x) = rx.try_recv() {
        seen.push(x);
    }
    assert_eq!(seen.len(), 10);
    for (i, r) in &seen {
        assert_eq!(r, &r1[*i]);
    }
    let r2 = h
        .loglikelihood(base.clone(), reqs.clone(), opts.clone(), None)
        .await
        .unwrap();
    assert_eq!(r1, r2);
    assert_eq!(
        h.cache_stats().await.unwrap().loads,
        1,
        "same key loads once"
    );
    let ra = h
        .loglikelihood(adapted.clone(), reqs.clone(), opts.clone(), None)
        .await
        .unwrap();
    assert_ne!(r1[0].logprob, ra[0].logprob);
    let stats = h.cache_stats().await.unwrap();
    // The adapter is applied over the cached base: the base weights are held once.
    assert_eq!((stats.loads, stats.evictions, stats.entries), (1, 0, 2));
    assert!(stats.bytes < model_bytes + model_bytes / 10, "{stats:?}");

    // Cancellation stops between batches.
    let cancel = CancelFlag::new();
    cancel.cancel();
    let e = h
        .loglikelihood(
            adapted,
            reqs,
            RunOptions {
                cancel: Some(cancel),
                ..opts.clone()
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::Cancelled));

    let info = h.describe_model(dir.clone()).await.unwrap();
    assert_eq!(info.architecture, "LlamaForCausalLM");
    assert_eq!(
        info.parameters,
        w.values().map(|t| t.elem_count() as u64).sum::<u64>()
    );
    assert_eq!(info.vocab_size, WORDS.len());
    assert_eq!(info.tokenizer_sha256.len(), 64);

    // A second base does not fit beside the first: the first goes, and the adapter built on it.
    let (other, _) = tiny_model("handle-other");
    h.loglikelihood(ModelSpec::cpu_f32(&other, None), ll_requests(2), opts, None)
        .await
        .unwrap();
    let stats = h.cache_stats().await.unwrap();
    assert_eq!((stats.loads, stats.evictions, stats.entries), (2, 2, 1));
    assert_eq!(loads.lock().unwrap().len(), 2);
}

#[test]
fn shared_prompt_scoring_matches_full_sequences() {
    let (dir, _) = tiny_model("share");
    let m = load(&dir, None, true).unwrap();
    let items: Vec<McItem> = SENTENCES
        .iter()
        .map(|p| McItem {
            prompt: p.to_string(),
            choices: vec![
                "yes".into(),
                "no it was not".into(),
                "the red mat and the blue dog".into(),
                "".into(),
            ],
            delimiter: None,
        })
        .chain(std::iter::once(McItem {
            prompt: String::new(),
            choices: vec!["a cat".into(), "dog".into()],
            delimiter: Some(String::new()),
        }))
        .collect();
    let run = |prefix_sharing: bool, max_batch_size: usize| {
        let opts = RunOptions {
            prefix_sharing,
            ..Default::default()
        };
        let batch = BatchConfig {
            max_batch_tokens: 10_000,
            max_batch_size,
        };
        scoring::multiple_choice(&m, &items, batch, &opts).unwrap()
    };
    let full = run(false, 32);
    let mut worst = 0f64;
    for shared in [run(true, 32), run(true, 2)] {
        for (a, b) in full.iter().zip(&shared) {
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                worst = worst.max((x - y).abs());
            }
            assert_eq!(
                (a.acc_pred, a.acc_norm_pred, &a.is_greedy),
                (b.acc_pred, b.acc_norm_pred, &b.is_greedy)
            );
        }
    }
    println!("shared prompt vs full sequences max abs diff {worst:e}");
    assert!(worst < 1e-4, "{worst}");
}
