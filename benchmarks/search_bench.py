"""End-to-end latency of POST /api/search/ through HTTP on loopback, with the time split per stage.

Starts the site (gunicorn, one sync worker, or `manage.py runserver` with --server runserver) against the
database named by DATABASE_URL (default: the embedded SQLite of `make run`), waits for it, then posts
real sketches as PNG data URLs, the way the drawing page does, and prints p50/p95 of the client-side
latency and of each server stage (decode, preprocess, embed, hash, sql, rerank, look, fetch) plus the
serialise + HTTP overhead (client time minus the server's stages).

    .venv/bin/python benchmarks/search_bench.py                     # the active index (make run: the demo)
    .venv/bin/python benchmarks/search_bench.py --index 7 --probes 2 --requests 300

Needs an active index: run `make run` once (or manage.py build_index). Nothing here is a unit test.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKETCHES = ROOT.parent / "shared" / "data" / "tu-berlin-40" / "png"
DEMO = ROOT / "data" / "demo" / "png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise SystemExit(f"the server did not answer {url} within {timeout:.0f} s")


def query_files(limit: int) -> list[Path]:
    # Test-split style queries: the last sketches of each class (by numeric id), real TU-Berlin drawings.
    base = SKETCHES if SKETCHES.is_dir() else DEMO
    files: list[Path] = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        files.extend(sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[-4:])
    return files[:limit]


def post(url: str, body: dict[str, object]) -> tuple[float, dict[str, object]]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    return (time.perf_counter() - started) * 1000, payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--k", type=int, default=24)
    parser.add_argument("--probes", type=int, default=0)
    parser.add_argument("--index", type=int, default=None)
    parser.add_argument("--server", choices=["gunicorn", "runserver"], default="gunicorn")
    parser.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    args = parser.parse_args()

    process = None
    base = args.url
    if base is None:
        port = free_port()
        env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "true")}
        if args.server == "gunicorn":
            command = [str(ROOT / ".venv/bin/gunicorn"), "sketchsite.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"]
        else:
            command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/api/indexes/")
        files = query_files(args.requests)
        if not files:
            raise SystemExit("no query sketches found")
        bodies = [
            {"image": "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode(), "k": args.k,
             "probes": args.probes, **({"index": args.index} if args.index else {})}
            for f in files
        ]  # fmt: skip
        for body in bodies[: args.warmup]:
            post(f"{base}/api/search/", body)  # the first searches load the index cache and the model
        client: list[float] = []
        stages: dict[str, list[float]] = {}
        index_label = ""
        for i in range(args.requests):
            elapsed, payload = post(f"{base}/api/search/", bodies[i % len(bodies)])
            client.append(elapsed)
            stats = payload["stats"]
            assert isinstance(stats, dict)
            timings = dict(stats["timings_ms"])
            server_total = timings.pop("total", sum(timings.values()))
            for stage, value in timings.items():
                stages.setdefault(stage, []).append(value)
            stages.setdefault("serialise+http", []).append(elapsed - server_total)
            index = payload["index"]
            assert isinstance(index, dict)
            index_label = f"{index['name']} v{index['version']} {index['family']} L={index['num_tables']} " \
                f"K={index['hashes_per_table']} extractor={index['extractor']}"  # fmt: skip
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    print(f"POST /api/search/ x {args.requests} ({len(files)} distinct TU-Berlin sketches), k={args.k}, "
          f"probes={args.probes}, server={args.server if args.url is None else args.url}")  # fmt: skip
    print(f"index: {index_label}")
    print(f"{'stage':<16}{'p50 ms':>10}{'p95 ms':>10}")
    for stage, values in stages.items():
        print(f"{stage:<16}{np.percentile(values, 50):>10.2f}{np.percentile(values, 95):>10.2f}")
    print(f"{'end to end':<16}{np.percentile(client, 50):>10.2f}{np.percentile(client, 95):>10.2f}")
    print(f"requests/s (sequential): {len(client) / (sum(client) / 1000):.1f}")


if __name__ == "__main__":
    main()
