#!/usr/bin/env python3
"""Check that PEFT loads an adapter written by muscle, and record its logits.

The adapter (tests/fixtures/train/peft-adapter) was written by our Rust training code:

    MUSCLE_WRITE_FIXTURES=1 cargo test --test engine train_engine::write_peft_fixture -- --ignored

This script loads it with PeftModel.from_pretrained onto the Hugging Face model
tests/fixtures/engine/models/llama-gqa (not merged) and records float32 logits at every
position of a few prompts, with and without the adapter, into
tests/fixtures/train/peft_logits.json. The Rust test
`peft_loads_our_adapter_to_the_same_logits` loads the same folder with our engine and
requires the same logits within 1e-4.

It does the same for the adapters our training wrote for every other family
(tests/fixtures/train/peft-families/<model>, on tests/fixtures/families/models/<model>):

    MUSCLE_WRITE_FIXTURES=1 cargo test --test engine train_families::write_family_peft_fixtures -- --ignored

into tests/fixtures/train/peft_families.json, checked by the Rust test
`peft_loads_every_family_adapter_we_write_to_our_logits`.

How to run (from the repository root; no network needed):

    /work/venv-ref/bin/python scripts/reference/check_peft_export.py

(requirements: scripts/reference/engine-requirements.txt: torch, transformers, peft)
"""

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests/fixtures/engine/models/llama-gqa"
ADAPTER = ROOT / "tests/fixtures/train/peft-adapter"
OUT = ROOT / "tests/fixtures/train/peft_logits.json"
FAMILY_MODELS = ROOT / "tests/fixtures/families/models"
FAMILY_ADAPTERS = ROOT / "tests/fixtures/train/peft-families"
FAMILY_OUT = ROOT / "tests/fixtures/train/peft_families.json"
PROMPTS = ["item 3 is green", "item 5 is blue", "the quick brown fox"]


def rounded(rows):
    return [[round(float(x), 6) for x in row] for row in rows]


def record(model_dir: Path, adapter_dir: Path) -> list:
    """Logits with and without the adapter at every position of PROMPTS."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    # Every LoRA tensor in the file must land on a module (a silent no-op is the classic bug).
    with safe_open(adapter_dir / "adapter_model.safetensors", "pt") as f:
        in_file = len(list(f.keys()))
    names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert len(names) == in_file, (adapter_dir, names, in_file)
    cases = []
    for text in PROMPTS:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            adapted = model(input_ids=x).logits[0]
            with model.disable_adapter():
                plain = model(input_ids=x).logits[0]
        cases.append(
            {
                "text": text,
                "ids": ids,
                "logits": rounded(adapted.tolist()),
                "base_logits": rounded(plain.tolist()),
                "max_change": float((adapted - plain).abs().max()),
            }
        )
    return cases


VERSIONS = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "peft": peft.__version__,
}


def main():
    cases = record(MODEL, ADAPTER)
    doc = {
        "source": "scripts/reference/check_peft_export.py",
        "versions": VERSIONS,
        "model": str(MODEL.relative_to(ROOT)),
        "adapter": str(ADAPTER.relative_to(ROOT)),
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    for case in cases:
        print(f"{case['text']!r}: {len(case['ids'])} tokens, adapter changes logits by up to {case['max_change']:.3f}")

    models = {}
    for adapter in sorted(FAMILY_ADAPTERS.iterdir()):
        models[adapter.name] = record(FAMILY_MODELS / adapter.name, adapter)
        change = max(c["max_change"] for c in models[adapter.name])
        print(f"{adapter.name}: adapter changes logits by up to {change:.3f}")
    doc = {
        "source": "scripts/reference/check_peft_export.py",
        "versions": VERSIONS,
        "models": models,
    }
    FAMILY_OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
