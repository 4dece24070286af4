//! Regenerates the shipped model update under `examples/model-update/` from nothing but this
//! repository's code: a synthetic world and two pretraining corpora, a word-level tokenizer,
//! an old and a new base model pretrained from random weights, a multiple-choice task, task
//! adapters on both bases, the MUSCLE compatibility adapter and a cross-entropy control; then
//! evaluates them over several seeds and prints the results as a Markdown table.
//!
//! ```sh
//! cargo run --release --example model_update -- --out examples/model-update --seeds 3
//! ```
//! `--keep-bases` reuses base folders already in `--out` (to retrain only the adapters).

mod adapters;
mod score;
mod task;
mod world;

use std::path::{Path, PathBuf};
use std::time::Instant;

use muscle::dataset::Item;
use muscle::spec::{Hyperparameters, Mask, Objective};
use muscle::train::pretrain::{BaseShape, PretrainSettings, Pretrainer, WordLevel};
use serde_json::Value;

use world::{Frequencies, Group};

const WORLD_SEED: u64 = 20_240_709;

struct Base {
    name: &'static str,
    shape: BaseShape,
    settings: PretrainSettings,
    frequencies: Frequencies,
}

fn shape(vocab: usize, hidden: usize, layers: usize, heads: usize) -> BaseShape {
    BaseShape {
        vocab_size: vocab,
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        intermediate_size: hidden * 2,
        max_position_embeddings: 128,
        bos_token_id: 1,
        eos_token_id: 2,
    }
}

fn bases(vocab: usize) -> [Base; 2] {
    let settings = |steps, seed| PretrainSettings {
        seq_len: 32,
        batch_size: 32,
        steps,
        learning_rate: 3e-3,
        warmup_steps: 50,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        seed,
    };
    [
        Base {
            name: "old-base",
            shape: shape(vocab, 48, 2, 4),
            settings: settings(env_u64("MU_OLD_STEPS", 600), 1),
            frequencies: Frequencies {
                common: 24,
                old_favoured: 24,
                new_only: 0,
            },
        },
        Base {
            name: "new-base",
            shape: shape(vocab, env_u64("MU_NEW_HIDDEN", 64) as usize, 3, 4),
            settings: settings(env_u64("MU_NEW_STEPS", 1000), 2),
            frequencies: Frequencies {
                common: 30,
                old_favoured: env_u64("MU_NEW_RARE", 0) as usize,
                new_only: 30,
            },
        },
    ]
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_f64(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn task_hyperparameters(seed: u64) -> Hyperparameters {
    Hyperparameters {
        rank: 8,
        alpha: 16.0,
        learning_rate: env_f64("MU_TASK_LR", 2e-3),
        epochs: env_u64("MU_TASK_EPOCHS", 2) as u32,
        batch_size: 16,
        warmup_steps: 20,
        seed,
        ..Hyperparameters::default()
    }
}

/// Compatibility and control: the same optimisation, only the loss differs.
fn continued_hyperparameters(seed: u64) -> Hyperparameters {
    Hyperparameters {
        learning_rate: env_f64("MU_COMPAT_LR", 3e-3),
        epochs: env_u64("MU_COMPAT_EPOCHS", 8) as u32,
        mask: match std::env::var("MU_MASK").as_deref() {
            Ok("likelihood") => Mask::Likelihood,
            Ok("old_correct") => Mask::OldCorrect,
            _ => Mask::Muscle,
        },
        ce_weight: env_f64("MU_CE_WEIGHT", 0.0),
        ..task_hyperparameters(seed)
    }
}

fn write_jsonl(path: &Path, rows: &[Value]) -> std::io::Result<()> {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text)
}

fn to_items(rows: &[Value]) -> Vec<Item> {
    rows.iter()
        .map(|r| serde_json::from_value(r.clone()).expect("a multiple-choice row"))
        .collect()
}

struct Args {
    out: PathBuf,
    seeds: u64,
    keep_bases: bool,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("examples/model-update"),
        seeds: 3,
        keep_bases: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => a.out = PathBuf::from(it.next().expect("--out DIR")),
            "--seeds" => a.seeds = it.next().and_then(|s| s.parse().ok()).expect("--seeds N"),
            "--keep-bases" => a.keep_bases = true,
            other => panic!("unknown argument {other} (--out DIR, --seeds N, --keep-bases)"),
        }
    }
    a
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = args();
    let t_all = Instant::now();
    std::fs::create_dir_all(&args.out)?;
    let entities = world::entities(WORLD_SEED);
    let train_rows = task::items(&entities, false, 12, WORLD_SEED + 1);
    let test_rows = task::items(&entities, true, 4, WORLD_SEED + 2);
    write_jsonl(&args.out.join("train.jsonl"), &train_rows)?;
    write_jsonl(&args.out.join("test.jsonl"), &test_rows)?;
    let (train, test) = (to_items(&train_rows), to_items(&test_rows));

    // One vocabulary for both bases: every word of the world and of the task.
    let mut texts: Vec<String> = entities.iter().map(|e| e.name.clone()).collect();
    texts.extend(world::CATEGORIES.iter().map(|c| c.to_string()));
    texts.extend(task::TEMPLATES.iter().map(|t| t.replace("{}", "")));
    texts.push("is a : the list .".into());
    let vocab = WordLevel::from_texts(texts.iter().map(String::as_str));
    eprintln!(
        "world: {} entities, vocabulary {} words; task: {} train / {} test items",
        entities.len(),
        vocab.len(),
        train.len(),
        test.len()
    );

    for base in bases(vocab.len()) {
        let dir = args.out.join(base.name);
        if args.keep_bases && dir.join("model.safetensors").exists() {
            continue;
        }
        let t0 = Instant::now();
        let sentences = world::corpus(&entities, base.frequencies, base.settings.seed);
        let tok = vocab.tokenizer()?;
        let mut stream = Vec::new();
        for s in &sentences {
            stream.extend(tok.encode(s.as_str(), false)?.get_ids());
        }
        let mut p = Pretrainer::new(base.shape.clone(), base.settings.clone())?;
        let steps = base.settings.steps;
        let mut recent = 0.0;
        for step in 0..steps {
            recent += p.step(&stream)?;
            if (step + 1) % 100 == 0 || step + 1 == steps {
                eprintln!(
                    "  {} step {}/{steps}: loss {:.3} ({:.0} s)",
                    base.name,
                    step + 1,
                    recent / 100.0,
                    t0.elapsed().as_secs_f64()
                );
                recent = 0.0;
            }
        }
        p.save(&dir, &vocab)?;
        let tokens = steps as usize * base.settings.batch_size * base.settings.seq_len;
        eprintln!(
            "{}: {} parameters, corpus {} tokens, {tokens} training tokens, {:.0} s",
            base.name,
            base.shape.parameters(),
            stream.len(),
            t0.elapsed().as_secs_f64()
        );
    }

    let old_base = args.out.join("old-base");
    let new_base = args.out.join("new-base");
    let scratch_root = std::env::temp_dir().join("muscle-model-update");
    let old_base_acc = score::correct(&old_base, None, &test)?;
    let new_base_acc = score::correct(&new_base, None, &test)?;
    eprintln!(
        "bases without adapters: old {:.3}, new {:.3}",
        score::pair(&old_base_acc, &old_base_acc).acc_new,
        score::pair(&new_base_acc, &new_base_acc).acc_new
    );

    let mut rows = Vec::new();
    for seed in 0..args.seeds {
        let dir = |name: &str| {
            if seed == 0 {
                args.out.join(name)
            } else {
                adapters::scratch(&scratch_root, seed, name)
            }
        };
        let (old_task, new_task, compat, control) = (
            dir("old-task"),
            dir("new-task"),
            dir("new-compat"),
            dir("new-ce-control"),
        );
        eprintln!("seed {seed}:");
        fn task_job<'a>(base: &'a str, path: &'a Path, seed: u64) -> adapters::Job<'a> {
            adapters::Job {
                objective: Objective::Task,
                base: path,
                start: None,
                old: None,
                hyperparameters: task_hyperparameters(seed),
                last_epoch: false,
                base_name: base,
            }
        }
        adapters::train(
            &task_job("model-update/old-base", &old_base, seed),
            &train,
            &old_task,
        )?;
        adapters::train(
            &task_job("model-update/new-base", &new_base, seed),
            &train,
            &new_task,
        )?;
        let continued = |objective, old| adapters::Job {
            objective,
            base: &new_base,
            start: Some(&new_task),
            old,
            hyperparameters: continued_hyperparameters(seed),
            last_epoch: true,
            base_name: "model-update/new-base",
        };
        adapters::train(
            &continued(Objective::Compatibility, Some((&old_base, &old_task))),
            &train,
            &compat,
        )?;
        adapters::train(&continued(Objective::Task, None), &train, &control)?;
        let old = score::correct(&old_base, Some(&old_task), &test)?;
        let new = score::correct(&new_base, Some(&new_task), &test)?;
        let c = score::correct(&new_base, Some(&compat), &test)?;
        let k = score::correct(&new_base, Some(&control), &test)?;
        let groups = group_flips(&test, &old, &new);
        eprintln!("  negative flips old-task -> new-task by group: {groups}");
        if seed == 0 {
            write_expected(
                &args.out,
                &old,
                &[
                    ("new-task", &new),
                    ("new-compat", &c),
                    ("new-ce-control", &k),
                ],
            )?;
        }
        rows.push((seed, old, new, c, k));
    }
    println!("{}", table(&rows));
    eprintln!("total {:.0} s", t_all.elapsed().as_secs_f64());
    Ok(())
}

fn group_flips(test: &[Item], old: &[bool], new: &[bool]) -> String {
    let mut out = Vec::new();
    for g in [Group::Common, Group::OldFavoured, Group::NewOnly] {
        let (mut nf, mut pf, mut n) = (0, 0, 0);
        for ((item, o), w) in test.iter().zip(old).zip(new) {
            if item.tags().get("group").map(String::as_str) == Some(g.name()) {
                n += 1;
                nf += usize::from(*o && !*w);
                pf += usize::from(!*o && *w);
            }
        }
        out.push(format!("{} {nf} NF / {pf} PF of {n}", g.name()));
    }
    out.join(", ")
}

type SeedRow = (u64, Vec<bool>, Vec<bool>, Vec<bool>, Vec<bool>);

fn table(rows: &[SeedRow]) -> String {
    let mut s = String::from(
        "| seed | model | acc old | acc new | nfr | Δnfr vs new-task | NF | PF | fixed / new NF vs new-task | McNemar p (NF change) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (seed, old, new, compat, control) in rows {
        let base = score::pair(old, new);
        let acc_old = old.iter().filter(|c| **c).count() as f64 / old.len() as f64;
        for (name, v) in [
            ("new-task", new),
            ("new-compat", compat),
            ("new-ce-control", control),
        ] {
            let p = score::pair(old, v);
            let nfr = p.nf as f64 / p.n as f64;
            let (change, fixed, p_value) = if name == "new-task" {
                ("—".to_string(), "—".to_string(), "—".to_string())
            } else {
                let (fixed, broken, pv) = score::nf_change_p(old, new, v);
                (
                    format!(
                        "{:+.1}%",
                        100.0 * (p.nf as f64 - base.nf as f64) / base.nf.max(1) as f64
                    ),
                    format!("{fixed} / {broken}"),
                    fmt_p(pv),
                )
            };
            s += &format!(
                "| {seed} | {name} | {:.3} | {:.3} | {:.2}% | {change} | {} | {} | {fixed} | {p_value} |\n",
                acc_old,
                p.acc_new,
                100.0 * nfr,
                p.nf,
                p.pf
            );
        }
    }
    s
}

fn fmt_p(p: f64) -> String {
    if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// Test items the shipped-model test evaluates.
const EXPECTED_ITEMS: usize = 240;

/// What tests/api/model_update_example.rs checks: per model, correct answers and negative flips
/// (against old-task) on the first EXPECTED_ITEMS test items.
fn write_expected(out: &Path, old: &[bool], models: &[(&str, &Vec<bool>)]) -> std::io::Result<()> {
    let n = EXPECTED_ITEMS.min(old.len());
    let mut m = serde_json::Map::new();
    let count = |v: &[bool]| v[..n].iter().filter(|x| **x).count();
    m.insert(
        "old-task".into(),
        serde_json::json!({"correct": count(old), "nf": 0}),
    );
    for (name, v) in models {
        let nf = old[..n]
            .iter()
            .zip(&v[..n])
            .filter(|(o, w)| **o && !**w)
            .count();
        m.insert(
            (*name).into(),
            serde_json::json!({"correct": count(v), "nf": nf}),
        );
    }
    let v = serde_json::json!({"items": n, "models": m});
    std::fs::write(
        out.join("expected.json"),
        serde_json::to_string_pretty(&v)? + "\n",
    )
}
