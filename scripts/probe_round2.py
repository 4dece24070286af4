"""The second hardening round's probes (issue "Hardening, second round"), one or more per item.

Imported by probe.py (`--round 2`). Each probe starts the servers it needs from the binary
under test, sends traffic to 127.0.0.1 alone, bounded in count and time, and returns rows of
(probe, what came back, whether that is what the issue asks for). The same script runs against
the binary from before the round, so its table shows before and after side by side.
"""

import concurrent.futures
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from probe import REPO, Server, request

SPEC = {"old": {"model": "tiny/llama"}, "new": {"model": "tiny/llama", "adapter": "tiny/llama-lora"},
        "task": {"type": "multiple_choice"}}


def rows_of(n, prompt=lambda i: f"Question {i}: a bird is", tags=lambda i: {"uid": f"u{i}"}):
    return "".join(json.dumps({"id": f"q{i}", "prompt": prompt(i), "choices": ["dry", "hot", "bright"],
                               "answer": i % 3, "tags": tags(i)}) + "\n" for i in range(n)).encode()


def upload(base, body, name="probe"):
    status, _, answer = request(base, "POST", f"/v1/datasets?name={name}", body, "application/x-ndjson",
                                timeout=300)
    assert status in (200, 201), (status, answer[:300])
    return json.loads(answer)["id"]


def submit(base, spec):
    status, headers, answer = request(base, "POST", "/v1/evaluations", json.dumps(spec).encode())
    assert status == 202, (status, answer[:300])
    return json.loads(answer)["id"]


def wait(base, job, until=("succeeded", "failed", "cancelled"), limit=600):
    started = time.time()
    while time.time() - started < limit:
        body = json.loads(request(base, "GET", f"/v1/evaluations/{job}")[2])
        if body["status"] in until:
            return body
        time.sleep(0.2)
    raise SystemExit(f"{job} did not reach {until}")


def timed(call):
    started = time.time()
    result = call()
    return time.time() - started, result


def parallel(n, call):
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda i: timed(call), range(n)))


def healthz_worst_while(base, busy):
    """The slowest of /healthz's answers, asked every 50 ms while `busy` runs."""
    worst, done = 0.0, threading.Event()

    def ask():
        nonlocal worst
        while not done.is_set():
            took, _ = timed(lambda: request(base, "GET", "/healthz", timeout=30))
            worst = max(worst, took)
            time.sleep(0.05)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        result = busy()
    finally:
        done.set()
        asker.join()
    return worst, result


def reports_computed(base):
    """muscle_reports_computed_total, or None where the binary does not count them."""
    metrics = request(base, "GET", "/metrics")[2].decode()
    return next((float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith("muscle_reports_computed_total ")), None)


def slices_and_reports(binary, url, tmp):
    """Items 2 and 3: a slice per row, and the report of a cancelled job read in parallel."""
    rows = []
    server = Server(binary, url, tmp, {"MUSCLE_WORKERS": "1"})
    try:
        base = server.base
        dataset = upload(base, rows_of(10_000), "unique-tags")
        job = submit(base, {**SPEC, "dataset": dataset, "options": {"batch_size": 32}})
        wait(base, job)
        took, (status, _, body) = timed(lambda: request(base, "GET", f"/v1/evaluations/{job}"))
        report = json.loads(body)["report"]
        rows.append(("2. slice_by a field unique per row (10,000 rows)",
                     f"{len(report['slices'])} slices listed, {report.get('slices_omitted', '-')} omitted; "
                     f"GET {len(body) / 1e6:.2f} MB in {took:.2f} s", len(report["slices"]) <= 200))
        reads = []
        worst, reads = healthz_worst_while(base, lambda: parallel(8, lambda: request(
            base, "GET", f"/v1/evaluations/{job}", timeout=120)))
        rows.append(("2. 8 parallel GETs of it; /healthz meanwhile",
                     f"each {max(t for t, _ in reads):.2f} s at most; /healthz worst {worst * 1000:.0f} ms",
                     worst < 0.1))
        status, _, body = request(base, "GET", f"/v1/evaluations/{job}/instances?slice=nope")
        rows.append(("2. ?slice=nope", f"{status}, {len(body) / 1e3:.1f} KB", status == 422 and len(body) < 10_000))
        took, (_, _, body) = timed(lambda: request(base, "GET", "/v1/evaluations?limit=100"))
        rows.append(("3. evaluations list", f"{len(body) / 1e3:.1f} KB in {took * 1000:.0f} ms", took < 0.2))

        big = upload(base, rows_of(3000, tags=lambda i: {"topic": f"t{i % 7}"}), "cancel-me")
        job = submit(base, {**SPEC, "dataset": big, "options": {"batch_size": 8, "shard_size": 8,
                                                                  "bootstrap_resamples": 100_000}})
        until = time.time() + 120
        while json.loads(request(base, "GET", f"/v1/evaluations/{job}")[2])["progress"]["done"] < 200:
            if time.time() > until:
                raise SystemExit("the job never reached 200 instances")
            time.sleep(0.05)
        request(base, "POST", f"/v1/evaluations/{job}/cancel")
        before = reports_computed(base)
        worst, first = healthz_worst_while(base, lambda: parallel(3, lambda: request(
            base, "GET", f"/v1/evaluations/{job}", timeout=120)))
        again, _ = timed(lambda: request(base, "GET", f"/v1/evaluations/{job}"))
        after = reports_computed(base)
        computed = "-" if before is None else f"{after - before:.0f}"
        rows.append(("3. 3 parallel first GETs of a cancelled job (100,000 resamples)",
                     f"{', '.join(f'{t:.2f}' for t, _ in first)} s; then {again:.2f} s; "
                     f"computed {computed} times; /healthz worst {worst * 1000:.0f} ms",
                     again < 0.2 and worst < 0.1))
    finally:
        server.stop()
    return rows


def bounded_specs(binary, url, tmp):
    """Item 4: huge gates, and 20 trainings submitted at once with the same output."""
    rows = []
    server = Server(binary, url, tmp)
    try:
        base = server.base
        dataset = upload(base, rows_of(30), "specs")
        spec = {**SPEC, "dataset": dataset}
        for what, gate in [("100,000 gate entries", [{"metric": "nfr", "max": 0.1}] * 100_000),
                           ("20,000 bad gate metrics", [{"metric": "nfrr", "max": 0.1}] * 20_000)]:
            status, _, body = request(base, "POST", "/v1/evaluations", json.dumps({**spec, "gate": gate}).encode())
            rows.append((f"4. {what}", f"{status}, {len(body) / 1e3:.1f} KB answer",
                         status == 422 and len(body) < 20_000))
        training = {"objective": "task", "new": {"model": "tiny/llama"}, "dataset": dataset,
                    "output": "trained/probe-same"}
        answers = parallel(20, lambda: request(base, "POST", "/v1/trainings", json.dumps(training).encode()))
        accepted = sum(1 for _, (status, _, _) in answers if status == 202)
        # Cancelled, so that a later probe's worker on the same database does not train it.
        for _, (status, _, body) in answers:
            if status == 202:
                request(base, "POST", f"/v1/trainings/{json.loads(body)['id']}/cancel")
        rows.append(("4. 20 parallel trainings, one output", f"{accepted} accepted", accepted == 1))
    finally:
        server.stop()
    return rows


def trickle(port, stop):
    """An upload whose body comes one byte every 2 s; the status line the server answers with."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/datasets?name=slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                  b"Content-Length: 100000\r\n\r\n")
        s.settimeout(2)
        while not stop.is_set():
            try:
                s.sendall(b"{")
                answer = s.recv(200)
                return answer.split(b"\r\n")[0].decode() if answer else "closed"
            except socket.timeout:
                continue
            except OSError:
                return "closed"
        return "still open"


def slow_bodies(binary, url, tmp):
    """Item 5: uploads trickling in, then a whole one."""
    server = Server(binary, url, tmp)
    stop = threading.Event()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            slow = [pool.submit(trickle, server.port, stop) for _ in range(6)]
            time.sleep(1)
            took, (status, _, _) = timed(lambda: request(server.base, "POST", "/v1/datasets?name=whole",
                                                         rows_of(10), "application/x-ndjson"))
            time.sleep(20)
            stop.set()
            answers = [f.result() for f in slow]
        cut = sum(1 for a in answers if " 408 " in a)
        return [("5. 6 uploads at 1 byte / 2 s, then a whole one",
                 f"whole: {status} in {took:.1f} s; after 20 s the slow ones: {cut} x 408, "
                 f"{answers.count('still open')} still open", status == 201 and took < 2 and cut == 6)]
    finally:
        stop.set()
        server.stop()


class Receiver(http.server.BaseHTTPRequestHandler):
    arrived = {}

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Receiver.arrived[self.path] = time.time()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def callbacks(binary, url, tmp):
    """Item 6: the allowlist compared as (host, port); a hanging receiver beside a healthy one."""
    rows = []
    Receiver.arrived.clear()
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(64)
    healthy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=healthy.serve_forever, daemon=True).start()
    hosts = f"[::1]:8080,127.0.0.1:{hanging.getsockname()[1]},127.0.0.1:{healthy.server_address[1]}"
    server = Server(binary, url, tmp, {"MUSCLE_WORKERS": "1", "MUSCLE_CALLBACK_HOSTS": hosts,
                                       "MUSCLE_CALLBACK_SECRET_PROBE": "s3cret"})
    try:
        base = server.base
        dataset = upload(base, rows_of(6), "callbacks")
        status, _, _ = request(base, "POST", "/v1/evaluations", json.dumps(
            {**SPEC, "dataset": dataset, "callback": {"url": "http://[::1:8080]:22/", "secret_env": "MUSCLE_CALLBACK_SECRET_PROBE"}}).encode())
        rows.append(("6. allowlist [::1]:8080, callback to [::1:8080]:22", str(status), status == 422))
        for i in range(6):
            submit(base, {**SPEC, "dataset": dataset, "name": f"hang-{i}",
                          "callback": {"url": f"http://127.0.0.1:{hanging.getsockname()[1]}/hang{i}",
                                       "secret_env": "MUSCLE_CALLBACK_SECRET_PROBE"}})
        job = submit(base, {**SPEC, "dataset": dataset, "name": "healthy",
                            "callback": {"url": f"http://127.0.0.1:{healthy.server_address[1]}/healthy",
                                         "secret_env": "MUSCLE_CALLBACK_SECRET_PROBE"}})
        finished = wait(base, job)
        done_at = time.time()
        while "/healthy" not in Receiver.arrived and time.time() - done_at < 90:
            time.sleep(0.1)
        delay = Receiver.arrived.get("/healthy", float("inf")) - done_at
        rows.append(("6. 6 callbacks to a hanging receiver, then one to a healthy one",
                     f"healthy one {delay:.1f} s after its job ended ({finished['status']})", delay < 5))
    finally:
        server.stop()
        healthy.shutdown()
        hanging.close()
    return rows


def exports(binary, url, tmp):
    """Item 7: formulas in instances.csv, Markdown and HTML in report.md."""
    server = Server(binary, url, tmp, {"MUSCLE_WORKERS": "1"})
    try:
        base = server.base
        hostile = ["=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0", "@SUM(1)", "-2+3"]
        dataset = upload(base, rows_of(4, prompt=lambda i: hostile[i]), "hostile")
        job = submit(base, {**SPEC, "dataset": dataset, "name": "**Gate: PASSED** <img src=http://x/p.png> `x`",
                            "gate": [{"metric": "nfr", "max": -1}]})
        wait(base, job)
        csv = request(base, "GET", f"/v1/evaluations/{job}/instances.csv")[2].decode()
        # Numbers (log-likelihoods) may start with '-'; the hostile texts may not start a cell.
        formulas = sum(1 for line in csv.splitlines()[1:] for cell in line.split(",")
                       if cell.lstrip('"')[:1] in ("=", "+", "@") or cell.lstrip('"') == "-2+3")
        md = request(base, "GET", f"/v1/evaluations/{job}/report.md")[2].decode()
        # An escaped character (\<, \*, \`) renders as itself: only unescaped ones count.
        raw = bool(re.search(r"(?<!\\)<img", md)) + ("**Gate: PASSED**" in md) + ("`x`" in md)
        return [("7. hostile prompts in instances.csv", f"{formulas} cells open as formulas", formulas == 0),
                ("7. hostile name in report.md", f"{raw} of 3 raw (<img, **Gate: PASSED**, `x`)", raw == 0)]
    finally:
        server.stop()


def open_endpoints(binary, url, tmp):
    """Item 8: a /readyz flood, and /docs' headers."""
    server = Server(binary, url, tmp)
    try:
        base = server.base
        answers = parallel(200, lambda: request(base, "GET", "/readyz"))
        bad = sum(1 for _, (status, _, _) in answers if status != 200)
        metrics = request(base, "GET", "/metrics")[2].decode()
        probes = next((line.split()[-1] for line in metrics.splitlines()
                       if line.startswith("muscle_readiness_probes_total ")), "not counted")
        ok = probes != "not counted" and int(float(probes)) <= 3
        _, headers, _ = request(base, "GET", "/docs/")
        headers = {k.lower(): v for k, v in headers.items()}
        present = [h for h in ("content-security-policy", "x-frame-options", "x-content-type-options") if h in headers]
        return [("8. 200 parallel /readyz", f"{bad} not 200; {probes} write probes", bad == 0 and ok),
                ("8. /docs security headers", ", ".join(present) or "none", len(present) == 3)]
    finally:
        server.stop()


def starts(binary, env, wait_s=4):
    """Starts `serve` with `env`; its exit code, or None when it was still serving after wait_s."""
    with tempfile.TemporaryDirectory() as tmp:
        full = {**os.environ, "MUSCLE_DATA_DIR": tmp, "MUSCLE_BIND": "127.0.0.1:0", "MUSCLE_WORKERS": "0",
                "RUST_LOG": "error", **env}
        full.pop("DATABASE_URL", None)
        child = subprocess.Popen([binary, "serve"], env=full, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        try:
            code = child.wait(timeout=wait_s)
            return code, child.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            child.terminate()
            child.wait(timeout=30)
            return None, []


def configuration(binary):
    """Item 9: a wildcard CORS origin and tokens HTTP cannot carry."""
    rows = []
    code, _ = starts(binary, {"MUSCLE_CORS_ORIGINS": "*"})
    rows.append(("9. MUSCLE_CORS_ORIGINS='*'", "serves" if code is None else f"exit {code}", code is None))
    for what, token in [("trailing space", "secret "), ("non-ASCII", "sécret")]:
        code, said = starts(binary, {"MUSCLE_API_TOKEN": token})
        rows.append((f"9. token with {what}", "serves" if code is None else f"exit {code}: {' '.join(said)[:60]}",
                     code == 2))
    return rows


def training_outputs(binary, url, tmp):
    """Item 10: outputs that would only fail after the whole training, and hidden folders."""
    models = Path(tmp) / "models"
    shutil.copytree(REPO / "examples", models)
    (models / "trained").mkdir(exist_ok=True)
    (models / "trained/afile").write_text("x")
    hidden = models / "trained/.0190.partial"
    shutil.copytree(REPO / "examples/tiny/llama-lora", hidden)
    server = Server(binary, url, tmp, {"MUSCLE_MODEL_DIR": str(models)})
    try:
        base = server.base
        dataset = upload(base, rows_of(30), "train")
        refused = 0
        outputs = ["trained/", "trained/afile/x", "trained/" + "n" * 300]
        for output in outputs:
            status, _, _ = request(base, "POST", "/v1/trainings", json.dumps(
                {"objective": "task", "new": {"model": "tiny/llama"}, "dataset": dataset, "output": output}).encode())
            refused += status == 422
        adapters = json.loads(request(base, "GET", "/v1/models")[2])["adapters"]
        listed = [a["name"] for a in adapters if "partial" in a["name"]]
        return [("10. outputs trained/, a file as folder, a 300-char name", f"{refused} of 3 refused", refused == 3),
                ("10. a .partial folder holding an adapter", f"listed: {listed or 'no'}", not listed)]
    finally:
        server.stop()


def served_spec(binary, url, tmp):
    """Item 11: the served /openapi.json with auth off."""
    server = Server(binary, url, tmp)
    try:
        spec = json.loads(request(server.base, "GET", "/openapi.json")[2])
        secured = sum(1 for path in spec["paths"].values() for op in path.values()
                      if isinstance(op, dict) and op.get("security"))
        return [("11. /openapi.json with auth off", f"{secured} operations require a token", secured == 0)]
    finally:
        server.stop()


def full_disk(binary, tmp):
    """Item 1 (SQLite, root only): the disk fills while an evaluation writes; uploads go on."""
    disk = Path(tmp) / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        return [("1. disk fills under a running job", "skipped: cannot mount a tmpfs (needs root)", True)]
    url = f"sqlite://{disk}/muscle.db"
    try:
        server = Server(binary, url, tmp, {"MUSCLE_WORKERS": "1", "MUSCLE_LEASE_SECONDS": "3",
                                           "MUSCLE_SHARD_SIZE": "16"})
        acknowledged, refused = [], 0
        try:
            base = server.base
            dataset = upload(base, rows_of(4000), "running")
            job = submit(base, {**SPEC, "dataset": dataset, "options": {"batch_size": 8, "shard_size": 16}})
            until = time.time() + 120
            while json.loads(request(base, "GET", f"/v1/evaluations/{job}")[2])["progress"]["done"] == 0:
                if time.time() > until:
                    raise SystemExit("the job never started")
                time.sleep(0.02)
            free = shutil.disk_usage(disk).free
            (disk / "filler").write_bytes(b"\0" * max(0, free - 256 * 1024))
            for n in range(400):
                status, _, body = request(base, "POST", f"/v1/datasets?name=full-{n}",
                                          rows_of(50, prompt=lambda i: "y" * 100), "application/x-ndjson")
                if status == 201:
                    acknowledged.append(json.loads(body)["id"])
                else:
                    refused += 1
                    if refused >= 20:
                        break
            (disk / "filler").unlink()
            for n in range(5):
                status, _, body = request(base, "POST", f"/v1/datasets?name=after-{n}",
                                          rows_of(50, prompt=lambda i: "z" * 100), "application/x-ndjson")
                if status == 201:
                    acknowledged.append(json.loads(body)["id"])
            final = wait(base, job, limit=300)
        finally:
            server.stop()
        server = Server(binary, url, tmp)
        try:
            lost = sum(1 for d in acknowledged if request(server.base, "GET", f"/v1/datasets/{d}")[0] != 200)
        finally:
            server.stop()
        return [("1. disk fills under a running job (SQLite)",
                 f"{len(acknowledged)} uploads acknowledged, {refused} refused; job {final['status']}; "
                 f"after a restart {lost} acknowledged lost", lost == 0)]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def round_two(binary, backend, url):
    probes = [slices_and_reports, bounded_specs, slow_bodies, callbacks, exports, open_endpoints,
              training_outputs, served_spec]
    if backend == "sqlite":
        probes.insert(0, lambda binary, url, tmp: full_disk(binary, tmp))
    rows = []
    for probe in probes:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                rows += probe(binary, url, tmp)
            except (AssertionError, KeyError, TypeError, json.JSONDecodeError, SystemExit) as error:
                rows.append((getattr(probe, "__name__", "probe"), f"could not run: {str(error)[:80]}", False))
    if backend == "sqlite":
        rows += configuration(binary)
    return [(probe, result, "yes" if ok else "NO") for probe, result, ok in rows]
