#!/usr/bin/env python3
"""Record real lm-evaluation-harness runs (`--log_samples`) of two tiny models, for muscle's
lm-eval interop tests (`muscle compare`, POST /v1/predictions, datasets in format lm-eval).

Everything is local and offline: the models are the committed fixture folders
(tests/fixtures/engine/models/llama-gqa, and the same base with the PEFT adapter
tests/fixtures/engine/adapters/llama-gqa-lora-list as the "new" model), the task data is
fabricated below, and lm-eval itself is run through its command line (`python -m lm_eval`,
pinned in engine-requirements.txt) on three local tasks written to a temporary --include_path:

  muscle_mc      multiple choice with 2 few-shot examples from a train split, acc and acc_norm,
                 documents carry an `activity_label` to slice by (HellaSwag-like)
  muscle_gsm     generate_until with 1 few-shot example (2 would pass the tiny models' 256 tokens), lm-eval's own gsm8k filters
                 (strict-match, flexible-extract) and exact_match options
  muscle_samsum  generate_until with no_repeat_ngram_size 2 and the paper's stop strings,
                 ROUGE-1 (the rouge-score package) from a process_results function

The tiny models' answers are random, so the generation runs would score 0 everywhere. The targets
are therefore fabricated from a first pass: some GSM documents get the old model's extracted
answer as their gold, some the new model's, and each summary gets a few words of one model's
output. Targets do not enter the prompts (the few-shot examples come from the fixed train split),
so the second, recorded pass sees the same prompts.

How to run (from the repository root):

    python3 -m venv /work/venv-ref            # any folder outside the repo
    /work/venv-ref/bin/pip install -r scripts/reference/engine-requirements.txt
    /work/venv-ref/bin/python scripts/reference/make_lmeval_fixtures.py

It rewrites tests/fixtures/lmeval/ from scratch:

  tasks/                the task YAMLs and data as run (data_files paths rewritten at run time)
  old/, new/            samples_<task>.jsonl as lm-eval wrote them (the date dropped from the
                        name) and results.json (lm-eval's aggregate results)
  README.md             versions and what the folders hold
"""

import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/lmeval"
MODELS = ROOT / "tests/fixtures/engine"
OLD = {"pretrained": MODELS / "models/llama-gqa"}
NEW = {"pretrained": MODELS / "models/llama-gqa", "peft": MODELS / "adapters/llama-gqa-lora-list"}
TASKS = ["muscle_mc", "muscle_gsm", "muscle_samsum"]

OFFLINE = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

WORDS = ("cat dog sun moon tree river stone bread milk rain snow wind fire ship road lamp "
         "door book song bird fish hill lake star cloud").split()
LABELS = ["Cooking", "Sports", "Gardening"]


def mc_docs(rng, n):
    docs = []
    for i in range(n):
        subject = rng.choice(WORDS)
        k = 3 if i % 3 else 4
        choices = rng.sample(WORDS, k)
        docs.append({
            "id": f"mc{i}",
            "activity_label": LABELS[i % len(LABELS)],
            "question": f"What goes with the {subject}?",
            # Some choices longer than others, so acc and acc_norm can differ.
            "choices": [c if j % 2 else f"the {c} of the {rng.choice(WORDS)}" for j, c in enumerate(choices)],
            "label": rng.randrange(k),
        })
    return docs


def gsm_docs(rng, n, prefix):
    docs = []
    for i in range(n):
        a, b = rng.randrange(2, 30), rng.randrange(2, 30)
        docs.append({
            "id": f"{prefix}{i}",
            "question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
            "answer": f"He has {a} + {b} = {a + b} apples.\n#### {a + b}",
        })
    return docs


def samsum_docs(rng, n):
    docs = []
    for i in range(n):
        w = rng.sample(WORDS, 4)
        docs.append({
            "id": f"ss{i}",
            "dialogue": f"Ann: Did you see the {w[0]}?\nBen: Yes, by the {w[1]}.\nAnn: And the {w[2]}?",
            "summary": f"Ben saw the {w[0]} by the {w[1]}, not the {w[2]} or the {w[3]}.",
        })
    return docs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


MC_YAML = """task: muscle_mc
dataset_path: json
dataset_kwargs:
  data_files:
    train: {data}/mc_train.jsonl
    test: {data}/mc_test.jsonl
training_split: train
fewshot_split: train
test_split: test
num_fewshot: 2
output_type: multiple_choice
doc_to_text: "{{{{activity_label}}}}: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

GSM_YAML = """task: muscle_gsm
dataset_path: json
dataset_kwargs:
  data_files:
    train: {data}/gsm_train.jsonl
    test: {data}/gsm_test.jsonl
training_split: train
fewshot_split: train
test_split: test
num_fewshot: 1
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore:
      - ","
      - "\\\\$"
      - "(?s).*#### "
      - "\\\\.$"
generation_kwargs:
  until:
    - "Question:"
    - "</s>"
    - "<|im_end|>"
  do_sample: false
  temperature: 0.0
  max_gen_toks: 24
repeats: 1
filter_list:
  - name: "strict-match"
    filter:
      - function: "regex"
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: "take_first"
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: "take_first"
metadata:
  version: 3.0
"""

SAMSUM_YAML = """task: muscle_samsum
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/samsum_test.jsonl
test_split: test
num_fewshot: 0
output_type: generate_until
doc_to_text: "Dialogue:\\n{{{{dialogue}}}}\\nSummary:"
doc_to_target: "{{{{summary}}}}"
process_results: !function samsum_utils.process_results
metric_list:
  - metric: rouge1
    aggregation: mean
    higher_is_better: true
generation_kwargs:
  until:
    - "Dialogue:"
    - "Summary:"
    - "</s>"
    - "\\n\\n"
  do_sample: false
  max_gen_toks: 32
  no_repeat_ngram_size: 2
metadata:
  version: 1.0
"""

SAMSUM_UTILS = '''from rouge_score import rouge_scorer

_SCORER = rouge_scorer.RougeScorer(["rouge1"])


def process_results(doc, results):
    return {"rouge1": _SCORER.score(doc["summary"], results[0])["rouge1"].fmeasure}
'''


def write_tasks(task_dir, data_dir):
    (task_dir / "muscle_mc.yaml").write_text(MC_YAML.format(data=data_dir))
    (task_dir / "muscle_gsm.yaml").write_text(GSM_YAML.format(data=data_dir))
    (task_dir / "muscle_samsum.yaml").write_text(SAMSUM_YAML.format(data=data_dir))
    (task_dir / "samsum_utils.py").write_text(SAMSUM_UTILS)


def run_lm_eval(model, task_dir, out_dir):
    args = ",".join(f"{k}={v}" for k, v in model.items()) + ",dtype=float32"
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", args,
           "--tasks", ",".join(TASKS), "--include_path", str(task_dir), "--device", "cpu",
           "--batch_size", "4", "--output_path", str(out_dir), "--log_samples", "--seed", "0"]
    env = {**os.environ, **OFFLINE}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    samples = {}
    for task in TASKS:
        [path] = list(out_dir.rglob(f"samples_{task}_*.jsonl"))
        samples[task] = path
    [results] = list(out_dir.rglob("results_*.json"))
    return samples, results


def outputs(samples_path):
    return {s["doc_id"]: s["filtered_resps"][0]
            for s in map(json.loads, samples_path.read_text().splitlines())}


def flexible_answers(samples_path):
    answers = {}
    for line in samples_path.read_text().splitlines():
        s = json.loads(line)
        if s["filter"] == "flexible-extract":
            answers[s["doc_id"]] = s["filtered_resps"][0]
    return answers


def main():
    rng = random.Random(20261201)
    mc_test, mc_train = mc_docs(rng, 24), mc_docs(rng, 4)
    gsm_test, gsm_train = gsm_docs(rng, 16, "gsm"), gsm_docs(rng, 3, "gsmtrain")
    samsum_test = samsum_docs(rng, 8)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, task_dir = tmp / "data", tmp / "tasks"
        data.mkdir()
        task_dir.mkdir()
        write_jsonl(data / "mc_test.jsonl", mc_test)
        write_jsonl(data / "mc_train.jsonl", mc_train)
        write_jsonl(data / "gsm_train.jsonl", gsm_train)
        write_jsonl(data / "samsum_test.jsonl", samsum_test)
        write_tasks(task_dir, data)

        # Pass 1: what each model answers, to fabricate golds that some answers match.
        write_jsonl(data / "gsm_test.jsonl", gsm_test)
        first = {}
        for side, model in (("old", OLD), ("new", NEW)):
            samples, _ = run_lm_eval(model, task_dir, tmp / f"pass1-{side}")
            first[side] = flexible_answers(samples["muscle_gsm"])
            first[f"{side}-samsum"] = outputs(samples["muscle_samsum"])
        for i, doc in enumerate(gsm_test):
            side = ("old", "new", None)[i % 3]
            answer = first[side][i] if side else None
            if answer and answer != "[invalid]":
                doc["answer"] = f"The answer is {answer}.\n#### {answer}"
        write_jsonl(data / "gsm_test.jsonl", gsm_test)
        # Summaries share a few words with one model's output, so ROUGE-1 is not 0 everywhere.
        for i, doc in enumerate(samsum_test):
            words = re.findall(r"[A-Za-z]{2,}", first[("old", "new")[i % 2] + "-samsum"][i])
            doc["summary"] += " " + " ".join(words[: 1 + i % 3])
        write_jsonl(data / "samsum_test.jsonl", samsum_test)

        shutil.rmtree(OUT, ignore_errors=True)
        (OUT / "tasks").mkdir(parents=True)
        for side, model in (("old", OLD), ("new", NEW)):
            samples, results = run_lm_eval(model, task_dir, tmp / f"pass2-{side}")
            (OUT / side).mkdir()
            for task, path in samples.items():
                shutil.copy(path, OUT / side / f"samples_{task}.jsonl")
            shutil.copy(results, OUT / side / "results.json")
        for path in sorted(data.iterdir()):
            shutil.copy(path, OUT / "tasks" / path.name)
        write_tasks(OUT / "tasks", "DATA_DIR")

    versions = {p: importlib.metadata.version(p)
                for p in ("lm_eval", "transformers", "torch", "peft", "rouge-score")}
    (OUT / "README.md").write_text(f"""# lm-evaluation-harness runs for the interop tests

Written by `scripts/reference/make_lmeval_fixtures.py` (do not edit by hand) with
{", ".join(f"{k} {v}" for k, v in versions.items())}, Python {platform.python_version()}, CPU, float32.

- `old/`: `lm_eval --model hf --model_args pretrained=tests/fixtures/engine/models/llama-gqa,dtype=float32`
- `new/`: the same with `peft=tests/fixtures/engine/adapters/llama-gqa-lora-list`
- both: `--tasks {",".join(TASKS)} --include_path tasks --batch_size 4 --log_samples --seed 0`
  (add_bos_token left to lm-eval's default: the tokenizer's post-processor adds BOS)
- `samples_<task>.jsonl`: lm-eval's per-sample file, renamed without its date
- `results.json`: lm-eval's aggregate results of the same run
- `tasks/`: the task YAMLs (their `data_files` were absolute paths to these files at run time)
  and the fabricated documents
""")


if __name__ == "__main__":
    main()
