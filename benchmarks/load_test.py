"""Load test: N concurrent clients POST real sketches to /api/search/ for a fixed time, on loopback only.

Starts gunicorn (WORKERS sync workers) against the database of DATABASE_URL (default: the embedded SQLite
of `make run`, which needs an active index), runs --clients threads for --seconds, then prints errors,
p50/p95 latency, requests/s, and the resident memory of the web workers before and after (after the
warm-up, so the model and index caches are already loaded: growth beyond that would be a leak).

    .venv/bin/python benchmarks/load_test.py                    # 16 clients, 60 s, 2 workers
    .venv/bin/python benchmarks/load_test.py --clients 4 --seconds 10
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_bench import ROOT, free_port, query_files, wait_up  # noqa: E402


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--k", type=int, default=24)
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SEARCH_THROTTLE_RATE": "1000000/minute"}  # measure the server, not the throttle
    gunicorn = [str(ROOT / ".venv/bin/gunicorn"), "sketchsite.wsgi", "-c", "docker/gunicorn.conf.py",
                "-b", f"127.0.0.1:{port}", "-w", str(args.workers), "--access-logfile", "/dev/null"]  # fmt: skip
    server = subprocess.Popen(gunicorn, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(f"{base}/api/indexes/")
        bodies = [
            json.dumps({"image": "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode(), "k": args.k})
            for f in query_files(160)
        ]
        url = f"{base}/api/search/"

        def post(body: str) -> float:
            request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
            return (time.perf_counter() - started) * 1000

        for body in bodies[: 4 * args.workers]:  # warm every worker's caches
            post(body)
        pids = worker_pids(server.pid)
        memory_before = rss_mb(pids)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + args.seconds

        def client(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                try:
                    elapsed = post(bodies[i % len(bodies)])
                    with lock:
                        latencies.append(elapsed)
                except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                    with lock:
                        errors.append(str(exc))
                i += args.clients

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        memory_after = rss_mb(pids)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print(f"{args.clients} clients x {elapsed:.0f} s against {args.workers} gunicorn workers (loopback)")
    print(f"requests: {len(latencies)} ok, {len(errors)} errors" + (f" (first: {errors[0]})" if errors else ""))
    if latencies:
        print(f"latency p50 {np.percentile(latencies, 50):.1f} ms, p95 {np.percentile(latencies, 95):.1f} ms")
        print(f"throughput {len(latencies) / elapsed:.1f} requests/s")
    print(f"web workers' memory: {memory_before:.0f} MB before, {memory_after:.0f} MB after")


if __name__ == "__main__":
    main()
