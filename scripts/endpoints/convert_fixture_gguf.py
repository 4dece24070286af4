#!/usr/bin/env python3
"""Run llama.cpp's own convert_hf_to_gguf.py on a fixture model whose tokenizer it does not know.

    python convert_fixture_gguf.py --llama-cpp DIR --model tests/fixtures/engine/models/llama-gqa \
        --outfile OUT.gguf [--outtype f32]

DIR is vendor/llama.cpp of llama-cpp-python's source distribution (the converter, its
`conversion/` package and its bundled `gguf-py/`). Everything else is the converter's own code.

Why a wrapper: for a byte-level BPE tokenizer the converter decides which pre-tokenizer llama.cpp
must run (the GGUF key `tokenizer.ggml.pre`) by encoding a fixed probe text, hashing the token ids
and looking the hash up in a table of known published models (TextModel.get_vocab_base_pre). The
fixture tokenizer is a tiny 448-token vocabulary trained for the tests, so its hash is in no table
and the converter stops with "BPE pre-tokenizer was not recognized". The hash only stands for
"which regex splits the text before BPE": the fixture's tokenizer.json uses Qwen2's split regex
(with Qwen2's NFC normalizer and a byte-level step without prefix space), which llama.cpp
implements as the pre-tokenizer "qwen2". So this wrapper answers "qwen2" for this one tokenizer,
after checking that its tokenizer.json really has Qwen2's normalizer and regex and that its probe
hash is the one recorded below (a changed fixture tokenizer fails loudly instead of being
mislabelled). Any other tokenizer goes through the converter's table unchanged. After converting,
the written GGUF is loaded with llama-cpp-python (when installed) and its tokenization of a few
strings is compared with the Hugging Face tokenizer's, which is what the mapping must guarantee.
"""

import argparse
import ast
import inspect
import json
import runpy
import sys
import textwrap
from hashlib import sha256
from pathlib import Path

# chkhsh of tests/fixtures/engine/models/llama-gqa's tokenizer (the converter's probe text encoded
# with transformers' AutoTokenizer, as the converter does it).
FIXTURE_CHKHSH = "81d84e2037b102a8337e831aaebc3c788e2694176a2fc0de286f9c48a5d6c334"
# Qwen2's pre-tokenizer split regex, as in Qwen/Qwen2-7B's tokenizer.json and in llama.cpp's
# LLAMA_VOCAB_PRE_TYPE_QWEN2 (src/llama-vocab.cpp).
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHECK_STRINGS = [
    "Hello world", " What goes with the cat?\nAnswer: the dog", "3 33 333 3333",
    "I've been told he's there, 'RE you sure?", "tab\there  two  spaces\n\nend", "caf\u00e9 na\u00efve",
]


def qwen2_like(model_dir):
    tok = json.loads((Path(model_dir) / "tokenizer.json").read_text())
    if tok.get("model", {}).get("type") != "BPE" or (tok.get("normalizer") or {}).get("type") != "NFC":
        return False
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if len(steps) != 2:
        return False
    split, byte_level = steps
    return (split.get("type") == "Split" and split.get("pattern", {}).get("Regex") == QWEN2_REGEX
            and split.get("behavior") == "Isolated" and not split.get("invert")
            and byte_level.get("type") == "ByteLevel" and not byte_level.get("add_prefix_space")
            and not byte_level.get("use_regex"))


def probe_text(original):
    """The converter's probe string, read from its own get_vocab_base_pre source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(original)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["chktxt"]:
            return ast.literal_eval(node.value)
    raise RuntimeError("chktxt not found in get_vocab_base_pre: the converter changed, update this wrapper")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", required=True, type=Path)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--outfile", required=True, type=Path)
    ap.add_argument("--outtype", default="f32")
    ap.add_argument("--print-hash", action="store_true", help="print the tokenizer's probe hash and exit")
    args = ap.parse_args()

    root = args.llama_cpp.resolve()
    sys.path[:0] = [str(root), str(root / "gguf-py")]
    import conversion.base as base  # the converter's own package

    original = base.TextModel.get_vocab_base_pre
    chktxt = probe_text(original)
    model_dir = args.model.resolve()

    if args.print_hash:
        from transformers import AutoTokenizer
        print(sha256(str(AutoTokenizer.from_pretrained(model_dir).encode(chktxt)).encode()).hexdigest())
        return

    def get_vocab_base_pre(self, tokenizer):
        chkhsh = sha256(str(tokenizer.encode(chktxt)).encode()).hexdigest()
        if chkhsh == FIXTURE_CHKHSH:
            if not qwen2_like(self.dir_model):
                raise SystemExit(f"{self.dir_model}: probe hash matches the fixture but tokenizer.json "
                                 "is not Qwen2's pre-tokenizer any more; refusing to label it qwen2")
            print(f"convert_fixture_gguf: tokenizer hash {chkhsh[:12]}... is the muscle fixture's "
                  "(Qwen2 split regex): tokenizer.ggml.pre = qwen2", flush=True)
            return "qwen2"
        return original(self, tokenizer)

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre

    args.outfile.parent.mkdir(parents=True, exist_ok=True)
    sys.argv = [str(root / "convert_hf_to_gguf.py"), "--outtype", args.outtype,
                "--outfile", str(args.outfile), str(model_dir)]
    try:
        runpy.run_path(str(root / "convert_hf_to_gguf.py"), run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    check_tokenization(model_dir, args.outfile)


def check_tokenization(model_dir, gguf_path):
    try:
        import llama_cpp
    except ImportError:
        print("convert_fixture_gguf: llama_cpp not installed, tokenization not checked", flush=True)
        return
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(model_dir)
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=64, vocab_only=True, verbose=False)
    for s in CHECK_STRINGS:
        a = hf.encode(s)
        b = llm.tokenize(s.encode(), add_bos=True, special=False)
        if a != b:
            raise SystemExit(f"GGUF tokenization differs from transformers' on {s!r}:\n  hf   {a}\n  gguf {b}")
    print(f"convert_fixture_gguf: GGUF tokenizes {len(CHECK_STRINGS)} probe strings exactly as transformers",
          flush=True)


if __name__ == "__main__":
    main()
