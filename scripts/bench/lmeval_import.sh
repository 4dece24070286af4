#!/usr/bin/env bash
# Import speed and memory of a 10,000-document lm-eval samples file: POST /v1/predictions and
# POST /v1/datasets?format=lm-eval on a release server (SQLite), then `muscle compare` of two.
#   cargo build --release && bash scripts/bench/lmeval_import.sh
set -u
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$repo/target/release/muscle"
work="$(mktemp -d)"
# 10,000 documents: the committed 24-document runs repeated with new doc_ids (15 MB each).
python3 - "$repo" "$work" <<'PY'
import json, sys
repo, work = sys.argv[1], sys.argv[2]
for side, out in (("old", "big_old.jsonl"), ("new", "big_new.jsonl")):
    lines = [json.loads(l) for l in open(f"{repo}/tests/fixtures/lmeval/{side}/samples_muscle_mc.jsonl")]
    with open(f"{work}/{out}", "w") as f:
        for i in range(10000):
            r = dict(lines[i % len(lines)]); r["doc_id"] = i
            f.write(json.dumps(r) + "\n")
PY
d=$(mktemp -d); port=18093
MUSCLE_BIND=127.0.0.1:$port MUSCLE_DATA_DIR=$d MUSCLE_MODEL_DIR="$repo/examples" MUSCLE_WORKERS=0 RUST_LOG=warn $bin serve >$d/log 2>&1 &
pid=$!
until curl -sf 127.0.0.1:$port/healthz >/dev/null; do sleep 0.2; done
echo "server baseline VmHWM: $(grep VmHWM /proc/$pid/status)"
for run in 1 2; do
t0=$(date +%s.%N)
curl -s -o /dev/null -w '%{http_code} ' -X POST "127.0.0.1:$port/v1/predictions?name=big$run" -H 'content-type: application/x-ndjson' --data-binary @$work/big_old.jsonl
t1=$(date +%s.%N)
echo "predictions 10000 rows: $(echo "$t1 - $t0" | bc) s, $(echo "10000 / ($t1 - $t0)" | bc) rows/s; $(grep VmHWM /proc/$pid/status)"
t0=$(date +%s.%N)
curl -s -o /dev/null -w '%{http_code} ' -X POST "127.0.0.1:$port/v1/datasets?name=big$run&format=lm-eval&slice_by=activity_label" -H 'content-type: application/x-ndjson' --data-binary @$work/big_old.jsonl
t1=$(date +%s.%N)
echo "dataset 10000 rows: $(echo "$t1 - $t0" | bc) s, $(echo "10000 / ($t1 - $t0)" | bc) rows/s; $(grep VmHWM /proc/$pid/status)"
done
kill $pid; wait $pid 2>/dev/null
/usr/bin/time -v $bin compare $work/big_old.jsonl $work/big_new.jsonl --out $d/r.json 2>$d/time.txt >/dev/null
echo "compare exit $?: $(grep -E 'Elapsed|Maximum resident' $d/time.txt | tr '\n' ' ')"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(\"n\", r[\"n\"], \"old acc\", r[\"old\"][\"accuracy\"], \"warnings\", r[\"warnings\"])" $d/r.json
rm -rf "$d" "$work"
