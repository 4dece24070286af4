#!/usr/bin/env python3
"""The hardening probe set (issue "Hardening"), against a fresh server, as a table.

    cargo build --release
    python3 scripts/probe.py [--bin target/release/muscle] [--postgres postgres://...] [--round 1|2]

Standard library only. Every probe sends traffic to 127.0.0.1 alone, bounded in count and
time. For each backend (SQLite always; Postgres when --postgres names a database the script may
fill) it starts `muscle serve` on a free port with the example models and prints one row per
probe: what was sent, what came back, and whether that is what the issue asks for.
"""

import argparse
import collections
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = (REPO / "examples/tiny/questions.jsonl").read_bytes()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, database_url, data_dir, settings=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update({
            "MUSCLE_BIND": f"127.0.0.1:{self.port}",
            "MUSCLE_DATA_DIR": str(data_dir),
            "MUSCLE_MODEL_DIR": str(REPO / "examples"),
            "MUSCLE_WORKERS": "0",
            "MUSCLE_API_TOKEN": "",
            "RUST_LOG": "warn",
            **(settings or {}),
        })
        if database_url:
            env["DATABASE_URL"] = database_url
        else:
            env.pop("DATABASE_URL", None)
        self.process = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=open(Path(data_dir) / "server.log", "w"))
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the server did not start: see server.log")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def request(base, method, path, body=None, content_type="application/json", timeout=60):
    req = urllib.request.Request(base + path, data=body, method=method)
    if body is not None:
        req.add_header("content-type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except OSError as error:
        return f"error: {type(error).__name__}", {}, b""


def burst(base, n, make):
    """n requests at once; Counter of statuses, and how many 503s lacked Retry-After."""
    statuses, missing_retry = collections.Counter(), 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        for status, headers, _ in pool.map(lambda i: make(i), range(n)):
            statuses[status] += 1
            if status == 503 and "Retry-After" not in headers and "retry-after" not in headers:
                missing_retry += 1
    return statuses, missing_retry


def summary(statuses):
    return ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items(), key=str))


def ok_statuses(statuses, allowed):
    return all(s in allowed for s in statuses)


def peak_rss_mib(pid):
    """VmHWM (the process's peak resident set) in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def resident_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def big_upload(server):
    """A 60 MiB upload of 1.2 M short generation rows with ids: peak and held memory around it."""
    body = b"".join(b'{"id":"r%07d","prompt":"p%07d","target":"t"}\n' % (i, i) for i in range(1_250_000))
    before = peak_rss_mib(server.process.pid)
    started = time.time()
    status, _, _ = request(server.base, "POST", "/v1/datasets?name=big", body, "application/x-ndjson", timeout=300)
    took = time.time() - started
    peak = peak_rss_mib(server.process.pid)
    time.sleep(2)
    held = resident_mib(server.process.pid)
    size = len(body) / 2**20
    result = (f"{status} in {took:.1f} s; {size:.0f} MiB body, peak {peak:.0f} MiB "
              f"(+{peak - before:.0f}, {(peak - before) / size:.1f}x the body), {held:.0f} MiB held after")
    return result, status == 201 and (peak - before) <= 4 * size


def probes(server):
    base, rows = server.base, []

    def row(probe, result, ok):
        rows.append((probe, result, "yes" if ok else "NO"))

    _, _, body = request(base, "POST", "/v1/datasets?name=probe", DATASET, "application/x-ndjson")
    dataset = json.loads(body)["id"]
    spec = json.dumps({"old": {"model": "tiny/llama"}, "new": {"model": "tiny/llama", "adapter": "tiny/llama-lora"},
                       "dataset": dataset, "task": {"type": "multiple_choice"}}).encode()

    statuses, missing = burst(base, 1000, lambda i: request(base, "POST", "/v1/evaluations", spec))
    _, _, listed = request(base, "GET", "/v1/evaluations?limit=500")
    accepted = statuses.get(202, 0)
    total_listed = 0
    cursor = None
    while True:
        _, _, page = request(base, "GET", "/v1/evaluations?limit=500" + (f"&cursor={cursor}" if cursor else ""))
        page = json.loads(page)
        total_listed += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    row("1,000 concurrent POST /v1/evaluations", f"{summary(statuses)}; {total_listed} listed",
        ok_statuses(statuses, {202, 503}) and missing == 0 and total_listed == accepted)

    statuses, missing = burst(base, 1000, lambda i: request(
        base, "POST", f"/v1/datasets?name=burst-{i}", DATASET.replace(b'"id": "', f'"id": "{i}-'.encode()),
        "application/x-ndjson"))
    row("1,000 concurrent dataset uploads", summary(statuses),
        ok_statuses(statuses, {201, 503}) and missing == 0)

    nul = [("query ?name=%00", "GET", "/v1/evaluations?name=%00", None),
           ("path id %00", "GET", "/v1/evaluations/a%00b", None),
           ("evaluation name with NUL", "POST", "/v1/evaluations",
            json.dumps({**json.loads(spec), "name": "a\u0000b"}).encode())]
    for name, method, path, body in nul:
        status, _, _ = request(base, method, path, body)
        row(f"NUL: {name}", str(status), status == 422)

    status, _, _ = request(base, "GET", "/v1/evaluations/x/instances?cursor=9223372036854775808")
    row("instances?cursor=2^63", str(status), status in (404, 422))

    before = request(base, "GET", "/metrics")[2].decode().count("muscle_http_requests_total{")
    for i in range(300):
        request(base, f"M{i}", "/v1/datasets")
    after = request(base, "GET", "/metrics")[2].decode().count("muscle_http_requests_total{")
    row("300 random HTTP methods", f"{after - before} new metric series", after - before <= 2)

    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(30)
        started = time.time()
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while s.recv(1024):
                pass
        except OSError:
            pass
        held = time.time() - started
    row("headers never finished", f"closed after {held:.1f} s", held < 15)

    sockets = []
    for _ in range(200):
        try:
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        except OSError:
            break
    time.sleep(12)
    alive = 0
    for s in sockets:
        s.settimeout(0.5)
        try:
            alive += s.recv(1) != b""
        except socket.timeout:
            alive += 1
        except OSError:
            pass
        s.close()
    row("200 idle sockets, after 12 s", f"{alive} still open", alive == 0)

    started = time.time()
    status, _, _ = request(base, "GET", "/readyz")
    row("/readyz", f"{status} in {time.time() - started:.2f} s", status == 200 and time.time() - started < 2)

    row("60 MiB upload, memory", *big_upload(server))

    _, _, body = request(base, "GET", "/v1/models")
    adapters = json.loads(body)["adapters"]
    row("AdapterInfo.target_modules", json.dumps([a["target_modules"] for a in adapters])[:60],
        all(isinstance(a["target_modules"], (list, str)) or a["target_modules"] is None for a in adapters))
    return rows


def closed_stderr(binary):
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "RUST_LOG": "info", "MUSCLE_DATA_DIR": tmp, "MUSCLE_MODEL_DIR": str(REPO / "examples")}
        env.pop("DATABASE_URL", None)
        child = subprocess.Popen([binary, "eval", str(REPO / "examples/tiny/eval.json"), "--out", f"{tmp}/r.json"],
                                 env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        child.stderr.close()
        try:
            code = child.wait(timeout=120)
            return ("eval with stderr a closed pipe", f"exit {code}", "yes" if code in (0, 1) else "NO")
        except subprocess.TimeoutExpired:
            child.kill()
            return ("eval with stderr a closed pipe", "hung (killed after 120 s)", "NO")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=str(REPO / "target/release/muscle"))
    parser.add_argument("--postgres", help="a Postgres URL the probes may fill")
    parser.add_argument("--round", choices=["1", "2", "all"], default="all",
                        help="the first hardening round's probes, the second's, or both")
    args = parser.parse_args()
    backends = [("sqlite", None)] + ([("postgres", args.postgres)] if args.postgres else [])
    table = []
    for backend, url in backends:
        if args.round in ("1", "all"):
            with tempfile.TemporaryDirectory() as tmp:
                server = Server(args.bin, url, tmp)
                try:
                    table += [(backend, *r) for r in probes(server)]
                finally:
                    server.stop()
        if args.round in ("2", "all"):
            import probe_round2
            table += [(backend, *r) for r in probe_round2.round_two(args.bin, backend, url)]
    if args.round in ("1", "all"):
        table.append(("-", *closed_stderr(args.bin)))
    print("| backend | probe | result | as asked |")
    print("|---|---|---|---|")
    for r in table:
        print("| " + " | ".join(r) + " |")
    return 0 if all(r[3] == "yes" for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
