"""Feature-extraction throughput and latency, without Django.

Measures, per backbone:
  * bare model images/s at a fixed batch size (random uint8 input, after one warm-up batch);
  * single-image embed latency, p50/p90 over ``--runs`` calls;
  * the single-query path (decode + preprocess + embed of one real PNG), p50;
  * the pipeline images/s: ``embed_images`` over real TU-Berlin files (decode + preprocess in threads, overlapped
    with the network), next to decode+preprocess alone and the bare model.
Then tries what makes the InceptionV3 single query faster: ``model.predict`` vs eager ``model(x)`` vs a traced
``tf.function`` (what ``KerasBackbone`` uses) vs XLA, a TFLite conversion of the same Keras model, smaller inputs,
and TensorFlow's intra/inter-op thread pools (each thread setting in a fresh subprocess, since TensorFlow fixes
them at start-up).

Usage::

    .venv/bin/python benchmarks/extract_bench.py                       # everything (~5 min on 2 cores)
    .venv/bin/python benchmarks/extract_bench.py --skip-variants       # the main table only
    .venv/bin/python benchmarks/extract_bench.py --backbones mobilenet_v1 --pipeline-images 640

InceptionV3 runs with ``weights="none"`` (random init) unless ``--inception-weights`` says otherwise: the timings do
not depend on the weight values.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the table

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from indexing.features.backbones import Backbone, load_backbone  # noqa: E402
from indexing.features.pipeline import embed_images, prepare_image  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "tu-berlin-40" / "png"


def percentile_ms(times: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000.0, q))


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def throughput(
    fn: Callable[[], object], items_per_call: int, min_seconds: float, max_calls: int = 50, warmup: bool = True
) -> float:
    if warmup:
        fn()  # tracing, allocation
    calls, start = 0, time.perf_counter()
    while calls < max_calls and (calls == 0 or time.perf_counter() - start < min_seconds):
        fn()
        calls += 1
    return calls * items_per_call / (time.perf_counter() - start)


def sample_files(data: Path, count: int) -> list[Path]:
    # Round-robin over classes so a short run still sees every class's stroke statistics.
    per_class = [sorted(d.glob("*.png")) for d in sorted(data.iterdir()) if d.is_dir()]
    files: list[Path] = []
    for i in range(max(len(p) for p in per_class)):
        files.extend(p[i] for p in per_class if i < len(p))
    return files[:count]


class Case:
    """One thing to time: a batch call, a single call, or both."""

    def __init__(self, name: str, single: Callable[[], object], batch: Callable[[], object] | None = None) -> None:
        self.name = name
        self.single = single
        self.batch = batch
        self.p50: list[float] = []  # one p50 per round, ms
        self.p90: list[float] = []
        self.rates: list[float] = []  # one images/s per round

    def row(self) -> dict[str, Any]:
        # Best round: on a shared machine the other processes only ever add time, so the fastest round is the
        # closest to the machine's real capability; the spread across rounds is printed alongside.
        row: dict[str, Any] = {"name": self.name}
        if self.p50:
            row["single_p50_ms"], row["single_p50_worst_ms"] = min(self.p50), max(self.p50)
            row["single_p90_ms"] = self.p90[int(np.argmin(self.p50))]
        if self.rates:
            row["batch_img_s"], row["batch_img_s_worst"] = max(self.rates), min(self.rates)
        return row


def run_interleaved(cases: list[Case], args: argparse.Namespace, batch_items: int) -> None:
    """Measure every case once per round, rounds interleaved, so load bursts hit all cases alike."""
    for case in cases:  # warm-up: traces, allocations, XLA compiles
        case.single()
        if case.batch is not None:
            case.batch()
    for _ in range(args.rounds):
        for case in cases:
            times = time_calls(case.single, args.runs, warmup=0)
            case.p50.append(percentile_ms(times, 50))
            case.p90.append(percentile_ms(times, 90))
            if case.batch is not None:
                case.rates.append(throughput(case.batch, batch_items, args.min_seconds, max_calls=20, warmup=False))


def bench_backbones(specs: list[str], files: list[Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    backbones: list[tuple[str, Backbone]] = []
    for spec in specs:
        name, options = parse_backbone(spec)
        weights = args.inception_weights if name == "inception_v3" else None
        backbones.append((spec, load_backbone(name, weights=weights, **options)))
    rng = np.random.default_rng(0)
    cases, query_cases = [], []
    query = files[0].read_bytes() if files else b""
    for spec, backbone in backbones:
        size = backbone.input_size
        batch = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
        cases.append(Case(spec, lambda b=backbone, x=batch[:1]: b.embed(x), lambda b=backbone, x=batch: b.embed(x)))
        if files:
            query_cases.append(Case(spec, lambda b=backbone, s=size: b.embed(prepare_image(query, s)[None])))
    run_interleaved(cases, args, args.batch)
    run_interleaved(query_cases, args, 1)
    rows = []
    for (spec, backbone), case, qcase in zip(backbones, cases, query_cases or [None] * len(cases), strict=True):
        row = {"backbone": spec, "input": backbone.input_size, "weights": backbone.weights, **case.row()}
        if qcase is not None:
            row["query_p50_ms"] = qcase.row()["single_p50_ms"]
        rows.append(row)
    if files:
        for (spec, backbone), row in zip(backbones, rows, strict=True):
            count = args.pipeline_images if backbone.name != "inception_v3" else args.inception_pipeline_images
            subset = files[:count]
            start = time.perf_counter()
            for path in subset:
                prepare_image(path, backbone.input_size)
            row["decode_serial_img_s"] = len(subset) / (time.perf_counter() - start)
            rates = []
            for _ in range(args.pipeline_rounds):
                start = time.perf_counter()
                done = sum(len(ids) for ids, _, _ in embed_images(enumerate(subset), backbone, batch_size=args.batch))
                rates.append(done / (time.perf_counter() - start))
            row["pipeline_img_s"], row["pipeline_img_s_worst"], row["pipeline_images"] = max(rates), min(rates), done
            print(f"measured pipeline {spec}", flush=True)
    return rows


# --------------------------------------------------------------------------------- InceptionV3 single query


def inception_variants(args: argparse.Namespace) -> list[dict[str, Any]]:
    import keras
    import tensorflow as tf

    from indexing.features.backbones import KerasBackbone

    weights = None if args.inception_weights == "none" else args.inception_weights
    x_u8 = np.random.default_rng(1).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    x = x_u8.astype(np.float32) / 127.5 - 1.0
    # One model instance for every variant, so the outputs can be compared (random init differs per build).
    model = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights, input_shape=(299, 299, 3))
    reference = model(x, training=False).numpy().reshape(-1)
    cases: list[Case] = []
    notes: dict[str, str] = {}
    outputs: dict[str, Callable[[], object]] = {}

    def add(name: str, fn: Callable[[], object], note: str = "", compare: bool = True) -> None:
        cases.append(Case(name, fn))
        notes[name] = note
        if compare:
            outputs[name] = fn

    add("model.predict(x)", lambda: model.predict(x, verbose=0), "builds a tf.data pipeline per call")
    add("eager model(x, training=False)", lambda: model(x, training=False).numpy(), "reference output")
    graph = KerasBackbone("inception_v3", model, weights=args.inception_weights, scale=1 / 127.5, offset=-1.0)
    add("tf.function uint8[None,299,299,3]", lambda: graph.embed(x_u8), "KerasBackbone default")
    start = time.perf_counter()
    xla = KerasBackbone("inception_v3", model, weights="", scale=1 / 127.5, offset=-1.0, jit_compile=True)
    xla.embed(x_u8)
    add(
        "tf.function + XLA (jit_compile)",
        lambda: xla.embed(x_u8),
        f"first call (compile) {time.perf_counter() - start:.1f} s",
    )

    if not args.skip_tflite:
        try:
            from ai_edge_litert.interpreter import Interpreter

            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # Keras's export lists every captured variable
                flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
            convert_s = time.perf_counter() - start
            interpreter = Interpreter(model_content=flatbuffer, num_threads=os.cpu_count())
            interpreter.allocate_tensors()
            inp = interpreter.get_input_details()[0]["index"]
            out = interpreter.get_output_details()[0]["index"]

            def run_tflite() -> np.ndarray:
                interpreter.set_tensor(inp, x)
                interpreter.invoke()
                return interpreter.get_tensor(out)

            add(
                "TFLite float32 (XNNPACK)",
                run_tflite,
                f"{len(flatbuffer) / 1e6:.0f} MB file, convert {convert_s:.0f} s",
            )
        except Exception as exc:  # noqa: BLE001 - a failed conversion is a result worth printing, not a crash
            print(f"  TFLite conversion failed: {exc!r:.200}")
            notes["TFLite float32"] = f"failed: {exc!r:.200}"

    for size in (224, 160):
        small_model = keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=weights, input_shape=(size, size, 3)
        )
        small = KerasBackbone("inception_v3", small_model, weights="", scale=1 / 127.5, offset=-1.0)
        xs = np.random.default_rng(2).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        add(f"tf.function at {size}x{size}", lambda b=small, v=xs: b.embed(v), "other features: re-index", False)

    run_interleaved(cases, args, 1)
    rows = []
    for case in cases:
        row = case.row()
        row["variant"], row["note"] = row.pop("name"), notes[case.name]
        if case.name in outputs:
            vec = np.asarray(outputs[case.name]()).reshape(-1)
            row["cos_vs_ref"] = float(vec @ reference / (np.linalg.norm(vec) * np.linalg.norm(reference)))
        rows.append(row)
    return rows


def thread_child(intra: int, inter: int, runs: int, weights: str) -> None:
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    backbone = load_backbone("inception_v3", weights=weights)
    x = np.random.default_rng(1).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    times = time_calls(lambda: backbone.embed(x), runs)
    batch = np.random.default_rng(2).integers(0, 256, (32, 299, 299, 3), dtype=np.uint8)
    rate = throughput(lambda: backbone.embed(batch), 32, 5.0, max_calls=2)
    print(json.dumps({"p50_ms": percentile_ms(times, 50), "batch_img_s": rate}))


def thread_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    configs = ((0, 0), (1, 1), (2, 1), (2, 2))
    results: dict[tuple[int, int], list[dict[str, float]]] = {c: [] for c in configs}
    for _ in range(args.rounds):  # rounds interleaved across configurations, best round kept
        for intra, inter in configs:
            cmd = [sys.executable, __file__, "--thread-child", str(intra), str(inter), "--runs", str(args.runs)]
            cmd += ["--inception-weights", args.inception_weights]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            try:
                results[(intra, inter)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            except (IndexError, json.JSONDecodeError):
                print(f"  intra={intra} inter={inter} failed: {out.stderr[-300:]}")
    rows = []
    for (intra, inter), runs in results.items():
        if runs:
            rows.append(
                {
                    "threads": "TF default" if intra == 0 else f"intra={intra} inter={inter}",
                    "single_p50_ms": min(r["p50_ms"] for r in runs),
                    "single_p50_worst_ms": max(r["p50_ms"] for r in runs),
                    "batch_img_s": max(r["batch_img_s"] for r in runs),
                }
            )
    return rows


# ----------------------------------------------------------------------------------------------------- main


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    texts = [[f"{row[key]:{fmt}}" if row.get(key, "") != "" else "" for key, _, fmt in columns] for row in rows]
    widths = [max([len(title)] + [len(t[i]) for t in texts]) for i, (_, title, _) in enumerate(columns)]
    print(" | ".join(title.ljust(w) for (_, title, _), w in zip(columns, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for cells in texts:
        print(
            " | ".join(
                c.ljust(w) if fmt.startswith("<") else c.rjust(w)
                for c, w, (_, _, fmt) in zip(cells, widths, columns, strict=True)
            )
        )


def parse_backbone(spec: str) -> tuple[str, dict[str, Any]]:
    """'mobilenet_v1@num_threads=1@batch_mode=resize' -> ('mobilenet_v1', {'num_threads': 1, ...})."""
    name, *opts = spec.split("@")
    options: dict[str, Any] = {}
    for opt in opts:
        key, _, value = opt.partition("=")
        options[key] = int(value) if value.isdigit() else value
    return name, options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["mobilenet_v1", "mobilenet_v1@num_threads=1", "mobilenet_v1@batch_mode=resize", "inception_v3"],
        help="registry names, optionally with load_backbone options: mobilenet_v1@num_threads=1@batch_mode=resize",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="TU-Berlin png/ folder")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20, help="calls per latency measurement")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="time per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best round is reported")
    parser.add_argument("--pipeline-rounds", type=int, default=2)
    parser.add_argument("--pipeline-images", type=int, default=640)
    parser.add_argument("--inception-pipeline-images", type=int, default=96)
    parser.add_argument("--inception-weights", default="none", help="'none' (timing only), 'imagenet' or a path")
    parser.add_argument("--skip-variants", action="store_true", help="skip the InceptionV3 single-query study")
    parser.add_argument("--skip-tflite", action="store_true", help="skip the (slow, ~30 s) TFLite conversion")
    parser.add_argument("--skip-threads", action="store_true", help="skip the thread-pool sweep")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--thread-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.thread_child:
        thread_child(*args.thread_child, args.runs, args.inception_weights)
        return 0

    files = (
        sample_files(args.data, max(args.pipeline_images, args.inception_pipeline_images)) if args.data.is_dir() else []
    )
    if not files:
        print(f"note: {args.data} not found; pipeline columns skipped")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} CPU cores, load average {load} at start; batch {args.batch}; "
        f"latency = p50 over {args.runs} calls\n"
    )

    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(), "batch": args.batch}
    results["backbones"] = bench_backbones(args.backbones, files, args)
    print()
    print_table(
        results["backbones"],
        [
            ("backbone", "backbone", "<"),
            ("input", "input", "d"),
            ("weights", "weights", "<"),
            ("batch_img_s", f"model img/s @{args.batch} best", ".1f"),
            ("batch_img_s_worst", "worst", ".1f"),
            ("single_p50_ms", "embed 1 p50 ms best", ".1f"),
            ("single_p50_worst_ms", "worst", ".1f"),
            ("query_p50_ms", "decode+prep+embed 1 p50 ms", ".1f"),
            ("decode_serial_img_s", "decode+prep img/s 1 thread", ".0f"),
            ("pipeline_img_s", "pipeline img/s best", ".1f"),
            ("pipeline_img_s_worst", "worst", ".1f"),
            ("pipeline_images", "files", "d"),
        ],
    )

    if not args.skip_variants:
        print("\nInceptionV3 single-image latency, one 299x299 image unless noted (same model instance throughout):")
        results["inception_variants"] = inception_variants(args)
        print_table(
            results["inception_variants"],
            [("variant", "variant", "<"), ("single_p50_ms", "p50 ms best", ".1f"),
             ("single_p50_worst_ms", "worst round", ".1f"), ("single_p90_ms", "p90 ms", ".1f"),
             ("cos_vs_ref", "cos vs eager", ".6f"), ("note", "note", "<")],
        )  # fmt: skip
        if not args.skip_threads:
            print("\nTensorFlow thread pools (fresh process each; InceptionV3 299, tf.function):")
            results["threads"] = thread_sweep(args)
            print_table(
                results["threads"],
                [("threads", "threads", "<"), ("single_p50_ms", "embed 1 p50 ms best", ".1f"),
                 ("single_p50_worst_ms", "worst", ".1f"), ("batch_img_s", "img/s @32 best", ".1f")],
            )  # fmt: skip
    results["loadavg_end"] = os.getloadavg()
    print(f"\nload average at the end: {', '.join(f'{v:.2f}' for v in results['loadavg_end'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
