#!/usr/bin/env bash
# Same outputs before and after a refactor (issue 23, item 10): runs every shipped example
# through one muscle binary, over HTTP and on the command line, and writes each answer to a file
# of its own, so that two binaries give the same outputs exactly when `diff -r` says nothing.
#
#   scripts/same_outputs.sh BIN OUTDIR          (OUTDIR must be absent or empty)
#
#   scripts/same_outputs.sh /work/baseline/muscle /tmp/before     # the binary before the change
#   cargo build && scripts/same_outputs.sh target/debug/muscle /tmp/after
#   diff -r /tmp/before /tmp/after && echo identical
#
# The inputs (examples/, tests/fixtures/lmeval, tests/fixtures/engine) are read from the checkout
# this script is in: compare two binaries with one checkout's script, or two checkouts whose
# inputs are the same. Needs python3 (standard library only); takes about 30 s.
#
# What runs, in a temporary copy of examples/ (plus the engine fixture model llama-gqa and its
# adapter, which the recorded lm-eval runs in tests/fixtures/lmeval were made with), against the
# binary's own server (`serve` on a free port, SQLite in the temporary folder, no token, one
# worker) and then its CLI with the README's environment (MUSCLE_MODEL_DIR, MUSCLE_DATA_DIR):
# - the README walk-through: dataset upload (and its 200 repeat), the evaluation with its
#   Idempotency-Key (and its repeat), then examples/tiny/eval.json;
# - examples/model-update/eval-*.json after uploading examples/model-update/test.jsonl as the
#   dataset they name;
# - the recorded lm-eval runs: each samples file uploaded as predictions and compared (mc by acc
#   and acc_norm, gsm under both filters, samsum by rouge1), a recorded side against a model,
#   the samples files as lm-eval datasets run on both models, and the instance listing of the
#   mc one as a recorded run (format=muscle) against the model;
# - the README's training through the API (about a second here) and the two evaluations it
#   queues; then the listings (evaluations, trainings, datasets, predictions, models) and the
#   README's 422 example;
# - for every finished evaluation: GET /v1/evaluations/{id}, every page of its instances (all,
#   by each flip kind, by each slice of its report), instances.csv, report.md, the 409 of a
#   cancel, and `muscle wait`;
# - the CLI: `muscle eval` on every example spec (--out and --instances, and one to stdout),
#   `muscle compare` on the recorded runs as the README and the tests call it, `muscle train
#   examples/tiny/train.json` (its result, the adapter's files by sha256).
#
# Each file is NNN-what: the request (method and path; a CLI run's arguments), its status (exit
# code), content type (stdout, stderr) and location, a blank line, then the body byte for byte.
# Only what differs from run to run is replaced: job, dataset and recorded-run ids by
# <evaluation-N>, <dataset-N>, <predictions-N>, <training-N> (N in order of creation; any other
# UUID by <uuid-N> in order of appearance), RFC 3339 timestamps by <timestamp>, the temporary
# folder by <work> and the server's address by <server>. Durations: none of these outputs holds
# one (no field, no log line: RUST_LOG=warn), so nothing else is touched. Requests go one at a
# time and each job is waited for before the next, so the order of jobs is fixed too; three runs
# of the binary of 078b349 gave identical folders. What varied at first, and how it is avoided
# rather than hidden: a training's answer shows the status of the evaluations it queued (they
# are waited for before it is recorded), and a recorded run whose ids are not numbers gets its
# instances in hash-map order (see the format=muscle step below).
set -euo pipefail
if [ $# -ne 2 ]; then
    sed -n '2,10p' "$0" >&2
    exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
exec python3 - "$repo" "$1" "$2" <<'PYTHON'
import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO, BIN, OUT = sys.argv[1], os.path.realpath(sys.argv[2]), os.path.abspath(sys.argv[3])
if not os.access(BIN, os.X_OK):
    sys.exit(f"same_outputs: {BIN} is not an executable")
if os.path.exists(OUT) and os.listdir(OUT):
    sys.exit(f"same_outputs: {OUT} is not empty")
os.makedirs(OUT, exist_ok=True)

WORK = tempfile.mkdtemp(prefix="muscle-same-outputs-")
EXAMPLES = os.path.join(WORK, "examples")
shutil.copytree(os.path.join(REPO, "examples"), EXAMPLES)
shutil.rmtree(os.path.join(EXAMPLES, "trained"), ignore_errors=True)  # git-ignored leftovers
# The recorded runs are read from the temporary folder too: no path of the checkout is written.
shutil.copytree(os.path.join(REPO, "tests/fixtures/lmeval"), os.path.join(WORK, "lmeval"))
for part in ["models/llama-gqa", "adapters/llama-gqa-lora-list"]:
    shutil.copytree(os.path.join(REPO, "tests/fixtures/engine", part),
                    os.path.join(EXAMPLES, "fixture", part))

# Only what the README sets: no DATABASE_URL or MUSCLE_* of the caller's shell leaks in.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("MUSCLE_") and k != "DATABASE_URL"}
ENV.update(RUST_LOG="warn", MUSCLE_MODEL_DIR=EXAMPLES)

# ---------------------------------------------------------------------------------------------
# Normalisation: ids, timestamps, the temporary folder and the port; nothing else.

ids = {}       # id -> placeholder
counters = {}  # kind -> how many so far
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# As report.md writes an id in its title (Markdown-escaped), for an evaluation without a name.
ESCAPED_UUID = re.compile(rb"[0-9a-f]{8}\\-[0-9a-f]{4}\\-[0-9a-f]{4}\\-[0-9a-f]{4}\\-[0-9a-f]{12}")
TIMESTAMP = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


def name_id(kind, value):
    """Names a new id `<kind-N>` (anything but a UUID is not an id, and stays as it is)."""
    if isinstance(value, str) and UUID.fullmatch(value.encode()) and value not in ids:
        counters[kind] = counters.get(kind, 0) + 1
        ids[value] = f"<{kind}-{counters[kind]}>"
    return value


def normalise(data: bytes) -> bytes:
    data = data.replace(WORK.encode(), b"<work>").replace(f"127.0.0.1:{PORT}".encode(), b"<server>")

    def placeholder(uuid: bytes) -> bytes:
        name_id("uuid", uuid.decode())  # an id not named at its creation: <uuid-N>
        return ids[uuid.decode()].encode()

    data = ESCAPED_UUID.sub(lambda m: placeholder(m.group(0).replace(b"\\", b"")), data)
    data = UUID.sub(lambda m: placeholder(m.group(0)), data)
    return TIMESTAMP.sub(b"<timestamp>", data)


sequence = 0


def record(what, head_lines, body: bytes):
    global sequence
    sequence += 1
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", normalise(what.encode()).decode())[:120].strip("_")
    head = "\n".join(head_lines) + "\n\n"
    with open(os.path.join(OUT, f"{sequence:03d}-{slug}"), "wb") as f:
        f.write(normalise(head.encode()) + normalise(body))


# ---------------------------------------------------------------------------------------------
# The server.

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    PORT = s.getsockname()[1]
BASE = f"http://127.0.0.1:{PORT}"
server_log = open(os.path.join(WORK, "server.log"), "wb")
server = subprocess.Popen(
    [BIN, "serve"], cwd=WORK, stdin=subprocess.DEVNULL, stdout=server_log, stderr=server_log,
    env={**ENV, "MUSCLE_BIND": f"127.0.0.1:{PORT}", "MUSCLE_DATA_DIR": os.path.join(WORK, "data"),
         "MUSCLE_API_TOKEN": ""})


def stop_server():
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def cleanup():
    stop_server()
    shutil.rmtree(WORK, ignore_errors=True)


atexit.register(cleanup)  # also when this script fails half-way


def finish(code, message=None):
    stop_server()
    if message:
        print(f"same_outputs: {message}", file=sys.stderr)
        with open(os.path.join(WORK, "server.log"), "rb") as f:
            sys.stderr.write(f.read()[-3000:].decode(errors="replace"))
    sys.exit(code)


def call(method, path, body=None, content_type=None, headers=None):
    request = urllib.request.Request(BASE + path, data=body, method=method, headers=headers or {})
    if content_type:
        request.add_header("content-type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def http(method, path, body=None, content_type=None, headers=None, expect=None, creates=None):
    """One recorded request; its status and parsed JSON body (None if not JSON). `creates`
    names the kind of what a 2xx answer's `id` is, before the answer is written."""
    status, response_headers, data = call(method, path, body, content_type, headers)
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    if creates and 200 <= status < 300 and isinstance(parsed, dict):
        name_id(creates, parsed.get("id"))
    if isinstance(parsed, dict) and isinstance(parsed.get("spec"), dict):
        # An evaluation of two recorded runs stores a dataset it made of them.
        name_id("dataset", parsed["spec"].get("dataset"))
    if isinstance(parsed, dict) and isinstance(parsed.get("evaluations"), dict):
        # A training's result names the evaluations it queued.
        for which in ["old_vs_new", "old_vs_compat"]:
            queued = parsed["evaluations"].get(which)
            if isinstance(queued, dict):
                name_id("evaluation", queued.get("id"))
    head = [f"{method} {path}", f"status: {status}",
            f"content-type: {response_headers.get('content-type')}"]
    if response_headers.get("location"):
        head.append(f"location: {response_headers['location']}")
    record(f"{method}-{path}", head, data)
    if expect is not None and status != expect:
        message = f"{method} {path}: {status}, expected {expect}: {data[:300]!r}"
        if creates:  # what follows needs its id
            finish(1, message)
        print(f"same_outputs: {message} (recorded; going on)", file=sys.stderr)
    return status, parsed


def post_json(path, spec, expect=None, headers=None, creates=None):
    return http("POST", path, json.dumps(spec).encode(), "application/json", headers, expect,
                creates)


def upload(path, file, creates, expect=None):
    with open(os.path.join(WORK, file), "rb") as f:
        return http("POST", path, f.read(), "application/x-ndjson", expect=expect,
                    creates=creates)


for _ in range(300):
    try:
        if call("GET", "/healthz")[0] == 200:
            break
    except OSError:
        pass
    if server.poll() is not None:
        finish(1, f"{BIN} serve exited with {server.returncode}")
    time.sleep(0.1)
else:
    finish(1, "the server did not answer /healthz")


def wait_job(kind, job_id):
    """Waits (unrecorded: how many polls it takes varies) until the job has finished."""
    for _ in range(120):
        status, _, data = call("GET", f"/v1/{kind}/{job_id}?wait=30")
        if status == 200 and json.loads(data)["status"] in ("succeeded", "failed", "cancelled"):
            return
    finish(1, f"{kind} {job_id} did not finish")


def all_pages(path):
    """Every page of a listing, each recorded."""
    cursor = None
    while True:
        sep = "&" if "?" in path else "?"
        page = path if cursor is None else f"{path}{sep}cursor={urllib.parse.quote(cursor)}"
        _, body = http("GET", page, expect=200)
        cursor = body.get("next_cursor") if isinstance(body, dict) else None
        if not cursor:
            return


def run_cli(args, files=(), label=None):
    """A recorded CLI run: exit code, stdout, stderr, then each file it wrote."""
    cli_env = {**ENV, "MUSCLE_DATA_DIR": os.path.join(WORK, "cli-data")}
    done = subprocess.run([BIN, *args], cwd=WORK, env=cli_env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=600)
    what = label or " ".join(args[:2])
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = None
    if isinstance(result, dict) and isinstance(result.get("evaluations"), dict):
        # `muscle train`'s result names the evaluations it ran.
        for which in ["old_vs_new", "old_vs_compat"]:
            if isinstance(result["evaluations"].get(which), dict):
                name_id("cli-evaluation", result["evaluations"][which].get("id"))
    command = "muscle " + " ".join(args)
    record(f"cli-{what}", [command, f"exit: {done.returncode}", "stream: stdout"], done.stdout)
    record(f"cli-{what}-stderr", [command, f"exit: {done.returncode}", "stream: stderr"], done.stderr)
    for file in files:
        path = os.path.join(WORK, file)
        data = open(path, "rb").read() if os.path.exists(path) else b"(not written)\n"
        record(f"cli-{what}-{file}", [command, f"file: {file}"], data)
        if os.path.exists(path):
            os.remove(path)
    return done.returncode, done.stdout


def evaluation_outputs(eval_id):
    """Everything a finished evaluation answers."""
    wait_job("evaluations", eval_id)
    path = f"/v1/evaluations/{eval_id}"
    _, job = http("GET", path, expect=200)
    all_pages(f"{path}/instances")
    for flip in ["negative", "positive", "both_correct", "both_wrong", "tie"]:
        all_pages(f"{path}/instances?flip={flip}")
    for entry in (((job or {}).get("report") or {}).get("slices") or []):
        all_pages(f"{path}/instances?slice={urllib.parse.quote(entry['slice'])}&limit=500")
    http("GET", f"{path}/instances.csv", expect=200)
    http("GET", f"{path}/report.md", expect=200)
    http("POST", f"{path}/cancel")  # 409: it has finished
    run_cli(["wait", eval_id, "--server", BASE, "--timeout", "60"], label=f"wait-{ids[eval_id]}")
    return job


def submit(spec, headers=None):
    _, body = post_json("/v1/evaluations", spec, expect=202, headers=headers, creates="evaluation")
    return body["id"]


def evaluate(spec, headers=None):
    eval_id = submit(spec, headers)
    evaluation_outputs(eval_id)
    return eval_id


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# HTTP: the README walk-through.

http("GET", "/healthz", expect=200)
http("GET", "/v1/models", expect=200)
questions = "examples/tiny/questions.jsonl"
_, dataset = upload("/v1/datasets?name=tiny-questions", questions, "dataset", expect=201)
tiny = dataset["id"]
upload("/v1/datasets?name=tiny-questions", questions, "dataset", expect=200)  # the same again
readme_spec = {
    "name": "tiny llama -> tiny llama + lora",
    "old": {"model": "tiny/llama"},
    "new": {"model": "tiny/llama", "adapter": "tiny/llama-lora"},
    "dataset": tiny,
    "task": {"type": "multiple_choice"},
    "gate": [{"metric": "nfr", "max": 0.05}, {"metric": "intervals.nfr.upper", "max": 0.1}],
}
evaluate(readme_spec, {"Idempotency-Key": "release-1"})
post_json("/v1/evaluations", readme_spec, headers={"Idempotency-Key": "release-1"})  # the same job
spec = read_json(os.path.join(EXAMPLES, "tiny/eval.json"))
spec["dataset"] = tiny
evaluate(spec)

# The shipped model update, on its test set uploaded once.
_, dataset = upload("/v1/datasets?name=model-update-test", "examples/model-update/test.jsonl",
                    "dataset", expect=201)
model_update = dataset["id"]
model_update_specs = sorted(f for f in os.listdir(os.path.join(EXAMPLES, "model-update"))
                            if f.startswith("eval-") and f.endswith(".json"))
for file in model_update_specs:
    spec = read_json(os.path.join(EXAMPLES, "model-update", file))
    spec["dataset"] = model_update
    evaluate(spec)

# The recorded lm-eval runs: each file as predictions, then compared as the README shows.
for task in ["muscle_mc", "muscle_gsm", "muscle_samsum"]:
    for side in ["old", "new"]:
        upload(f"/v1/predictions?name={task}-{side}&task={task}&model={side}",
               f"lmeval/{side}/samples_{task}.jsonl", "predictions", expect=201)


def recorded(task, task_spec, options=None, gate=None):
    spec = {"old": {"predictions": f"{task}-old"}, "new": {"predictions": f"{task}-new"},
            "task": task_spec}
    if options:
        spec["options"] = options
    if gate is not None:
        spec["gate"] = gate
    return evaluate(spec)


recorded("muscle_mc", {"type": "multiple_choice", "score": "acc_norm"},
         {"slice_by": ["activity_label"]}, [{"metric": "nfr", "max": 0.05}])
recorded("muscle_mc", {"type": "multiple_choice"}, {"slice_by": ["activity_label"]})
for lm_filter in ["strict-match", "flexible-extract"]:
    recorded("muscle_gsm", {"type": "generation", "filter": lm_filter})
recorded("muscle_samsum", {"type": "generation", "metric": "rouge1"})
# A model on the new side runs the requests the old side recorded.
evaluate({"old": {"predictions": "muscle_mc-old"},
          "new": {"model": "fixture/models/llama-gqa", "adapter": "fixture/adapters/llama-gqa-lora-list"},
          "task": {"type": "multiple_choice"}, "options": {"slice_by": ["activity_label"]}})
# The samples files as datasets (format=lm-eval), both sides run on the models they came from.
sides = {"old": {"model": "fixture/models/llama-gqa"},
         "new": {"model": "fixture/models/llama-gqa", "adapter": "fixture/adapters/llama-gqa-lora-list"}}
_, dataset = upload("/v1/datasets?name=lmeval-mc&format=lm-eval&slice_by=activity_label",
                    "lmeval/old/samples_muscle_mc.jsonl", "dataset", expect=201)
lmeval_mc_eval = evaluate({**sides, "dataset": dataset["id"],
                           "task": {"type": "multiple_choice"}, "options": {"batch_size": 4}})
_, dataset = upload("/v1/datasets?name=lmeval-gsm&format=lm-eval",
                    "lmeval/old/samples_muscle_gsm.jsonl", "dataset", expect=201)
gsm = dataset["id"]
for lm_filter in ["strict-match", "flexible-extract"]:
    evaluate({**sides, "dataset": gsm, "options": {"batch_size": 4},
              "task": {"type": "generation", "preset": "gsm8k", "filter": lm_filter,
                       "max_new_tokens": 24}})
_, dataset = upload("/v1/datasets?name=lmeval-samsum&format=lm-eval",
                    "lmeval/old/samples_muscle_samsum.jsonl", "dataset", expect=201)
evaluate({**sides, "dataset": dataset["id"], "options": {"batch_size": 4},
          "task": {"type": "generation", "preset": "samsum", "max_new_tokens": 32}})
# An earlier evaluation's instance listing as the recorded old side of the next one. That
# evaluation is the lm-eval one, whose instance ids are numbers: 078b349 orders a recorded run's
# instances by numeric id and leaves ids that are not numbers (q1, q2, ... of the tiny dataset)
# in hash-map order, which differs from one server process to the next, so their instance
# order (and report.md's first flips) would differ between two runs of the same binary.
listing = b""
cursor = None
while True:
    page = f"/v1/evaluations/{lmeval_mc_eval}/instances?limit=500"
    status, _, data = call("GET", page if cursor is None else f"{page}&cursor={cursor}")
    body = json.loads(data)
    listing += b"".join(json.dumps(item).encode() + b"\n" for item in body["items"])
    cursor = body.get("next_cursor")
    if not cursor:
        break
http("POST", "/v1/predictions?format=muscle&side=new&name=last-release", listing,
     "application/x-ndjson", expect=201, creates="predictions")
evaluate({"old": {"predictions": "last-release"}, "new": sides["new"],
          "task": {"type": "multiple_choice"}})

# The README's training through the API and the two evaluations it queues.
_, training = post_json("/v1/trainings", {
    "objective": "compatibility",
    "old": {"model": "tiny/llama"}, "new": {"model": "tiny/llama", "adapter": "tiny/llama-lora"},
    "dataset": "tiny-questions", "output": "trained/tiny-compat-api",
    "hyperparameters": {"rank": 8, "epochs": 2, "warmup_steps": 0},
    "evaluate": {"dataset": "tiny-questions", "task": {"type": "multiple_choice"},
                 "gate": [{"metric": "nfr", "max": 0.2}]}}, expect=202, creates="training")
training_id = training["id"]
wait_job("trainings", training_id)
# The training has finished before the evaluations it queued (its answer shows their status):
# both are waited for before its answer is recorded.
queued = json.loads(call("GET", f"/v1/trainings/{training_id}")[2]).get("evaluations") or {}
queued = [queued[which]["id"] for which in ["old_vs_new", "old_vs_compat"] if which in queued]
for eval_id in queued:
    wait_job("evaluations", eval_id)
http("GET", f"/v1/trainings/{training_id}", expect=200)
for eval_id in queued:
    evaluation_outputs(eval_id)
http("POST", f"/v1/trainings/{training_id}/cancel")  # 409: it has finished
run_cli(["wait", training_id, "--server", BASE, "--timeout", "60"], label=f"wait-{ids[training_id]}")

# Listings, and the README's error example.
all_pages("/v1/evaluations")
all_pages("/v1/evaluations?limit=5")
all_pages("/v1/evaluations?status=succeeded")
all_pages("/v1/evaluations?name=" + urllib.parse.quote("model-update"))
all_pages("/v1/trainings")
all_pages("/v1/trainings?status=succeeded")
all_pages("/v1/datasets")
for value, placeholder in list(ids.items()):
    if placeholder.startswith("<dataset-"):
        http("GET", f"/v1/datasets/{value}", expect=200)
all_pages("/v1/predictions")
for value, placeholder in list(ids.items()):
    if placeholder.startswith("<predictions-"):
        http("GET", f"/v1/predictions/{value}", expect=200)
http("GET", "/v1/models", expect=200)
post_json("/v1/evaluations", {**readme_spec, "old": {"model": "tiny/lama"}}, expect=422)

# ---------------------------------------------------------------------------------------------
# The CLI, as the README calls it (in the temporary folder: examples/... paths resolve there).

run_cli(["eval", "examples/tiny/eval.json", "--out", "report.json", "--instances", "instances.jsonl"],
        ["report.json", "instances.jsonl"])
for file in model_update_specs:
    run_cli(["eval", f"examples/model-update/{file}", "--out", "report.json", "--instances",
             "instances.jsonl"], ["report.json", "instances.jsonl"], label=f"eval-{file}")
run_cli(["eval", "examples/model-update/eval-update.json"], label="eval-update-to-stdout")
lmeval_spec = {**sides, "dataset": {"path": "lmeval/old/samples_muscle_mc.jsonl",
                                    "format": "lm-eval", "slice_by": ["activity_label"]},
               "task": {"type": "multiple_choice"}, "options": {"batch_size": 4}}
with open(os.path.join(WORK, "lmeval-mc.json"), "w") as f:
    json.dump(lmeval_spec, f)
run_cli(["eval", "lmeval-mc.json", "--out", "report.json", "--instances", "instances.jsonl"],
        ["report.json", "instances.jsonl"], label="eval-lmeval-mc")
for task, extra in [
    ("muscle_mc", ["--slice-by", "activity_label", "--gate", '[{"metric": "nfr", "max": 0.05}]']),
    ("muscle_mc", ["--metric", "acc_norm", "--slice-by", "activity_label"]),
    ("muscle_gsm", ["--filter", "strict-match", "--slice-by", "id"]),
    ("muscle_gsm", ["--filter", "flexible-extract", "--slice-by", "id"]),
    ("muscle_gsm", []),  # several filters, none named: exit 2 naming them
    ("muscle_samsum", ["--metric", "rouge1", "--slice-by", "id"]),
]:
    run_cli(["compare", f"lmeval/old/samples_{task}.jsonl", f"lmeval/new/samples_{task}.jsonl", *extra,
             "--out", "report.json", "--instances", "instances.jsonl"],
            ["report.json", "instances.jsonl"], label=f"compare-{task}-{'-'.join(extra[:2])}")
run_cli(["train", "examples/tiny/train.json"], label="train-tiny")
trained = os.path.join(EXAMPLES, "trained/tiny-compat")
listing = b""
for root, _, files in sorted(os.walk(trained)):
    for file in sorted(files):
        path = os.path.join(root, file)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        listing += f"{digest}  {os.path.relpath(path, trained)}\n".encode()
record("cli-train-tiny-adapter-files", ["examples/trained/tiny-compat: sha256 of each file"], listing)
http("GET", "/v1/models", expect=200)  # both trained adapters listed

# Unnamed ids are numbered in order of appearance, so the order of the files is part of the
# comparison; re-normalising every file now that all ids are known would change nothing.
print(f"same_outputs: {sequence} answers written to {OUT}")
finish(0)
PYTHON
