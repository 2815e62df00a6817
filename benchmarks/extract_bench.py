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


def throughput(fn: Callable[[], object], items_per_call: int, min_seconds: float, max_calls: int = 50) -> float:
    fn()  # warm-up: tracing, allocation
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


def bench_backbone(backbone: Backbone, files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    size = backbone.input_size
    batch = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    single = batch[:1]
    row: dict[str, Any] = {"backbone": backbone.name, "input": size, "dim": backbone.dim}
    row["batch_img_s"] = throughput(lambda: backbone.embed(batch), args.batch, args.min_seconds)
    times = time_calls(lambda: backbone.embed(single), args.runs)
    row["single_p50_ms"], row["single_p90_ms"] = percentile_ms(times, 50), percentile_ms(times, 90)
    if files:
        query = files[0].read_bytes()
        times = time_calls(lambda: backbone.embed(prepare_image(query, size)[None]), args.runs)
        row["query_p50_ms"] = percentile_ms(times, 50)
        count = args.pipeline_images if backbone.name != "inception_v3" else args.inception_pipeline_images
        subset = files[:count]
        start = time.perf_counter()
        for path in subset:
            prepare_image(path, size)
        row["decode_serial_img_s"] = len(subset) / (time.perf_counter() - start)
        start = time.perf_counter()
        done = sum(len(ids) for ids, _, _ in embed_images(enumerate(subset), backbone, batch_size=args.batch))
        row["pipeline_img_s"] = done / (time.perf_counter() - start)
        row["pipeline_images"] = done
    return row


# --------------------------------------------------------------------------------- InceptionV3 single query


def inception_variants(args: argparse.Namespace) -> list[dict[str, Any]]:
    import keras
    import tensorflow as tf

    rows: list[dict[str, Any]] = []
    weights = None if args.inception_weights == "none" else args.inception_weights
    x_u8 = np.random.default_rng(1).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    x = x_u8.astype(np.float32) / 127.5 - 1.0

    def add(name: str, fn: Callable[[], object], note: str = "", reference: np.ndarray | None = None) -> None:
        times = time_calls(fn, args.runs)
        row = {"variant": name, "p50_ms": percentile_ms(times, 50), "p90_ms": percentile_ms(times, 90), "note": note}
        if reference is not None:
            out = np.asarray(fn()).reshape(-1)
            row["cos_vs_ref"] = float(out @ reference / (np.linalg.norm(out) * np.linalg.norm(reference)))
        rows.append(row)
        print(f"  {name:<34} p50 {row['p50_ms']:8.1f} ms  {note}", flush=True)

    model = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights, input_shape=(299, 299, 3))
    reference = model(x, training=False).numpy().reshape(-1)
    add("model.predict(x)", lambda: model.predict(x, verbose=0), "builds a tf.data pipeline per call")
    add("eager model(x, training=False)", lambda: model(x, training=False).numpy())

    backbone = load_backbone("inception_v3", weights=args.inception_weights)
    add(
        "tf.function uint8[None,299,299,3]",
        lambda: backbone.embed(x_u8),
        "KerasBackbone default",
        reference=reference / np.linalg.norm(reference),
    )
    start = time.perf_counter()
    xla = load_backbone("inception_v3", weights=args.inception_weights, jit_compile=True)
    xla.embed(x_u8)
    add(
        "tf.function + XLA (jit_compile)",
        lambda: xla.embed(x_u8),
        f"first call (compile) {time.perf_counter() - start:.1f} s",
        reference=reference / np.linalg.norm(reference),
    )

    if not args.skip_tflite:
        try:
            from ai_edge_litert.interpreter import Interpreter

            start = time.perf_counter()
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

            note = f"float32, {len(flatbuffer) / 1e6:.0f} MB, convert {convert_s:.0f} s"
            add("TFLite float32 (XNNPACK)", run_tflite, note, reference=reference)
        except Exception as exc:  # noqa: BLE001 - a failed conversion is a result worth printing, not a crash
            print(f"  TFLite conversion failed: {exc!r:.200}")
            rows.append({"variant": "TFLite float32", "note": f"failed: {exc!r:.200}"})

    for size in (224, 160):
        small = load_backbone("inception_v3", weights=args.inception_weights, input_size=size)
        xs = np.random.default_rng(2).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        add(f"tf.function at {size}x{size}", lambda s=small, v=xs: s.embed(v), "different features: re-index needed")  # type: ignore[misc]
    return rows


def thread_child(intra: int, inter: int, runs: int, weights: str) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    backbone = load_backbone("inception_v3", weights=weights)
    x = np.random.default_rng(1).integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    times = time_calls(lambda: backbone.embed(x), runs)
    batch = np.random.default_rng(2).integers(0, 256, (32, 299, 299, 3), dtype=np.uint8)
    rate = throughput(lambda: backbone.embed(batch), 32, 5.0, max_calls=2)
    print(json.dumps({"p50_ms": percentile_ms(times, 50), "batch_img_s": rate}))


def thread_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for intra, inter in ((0, 0), (1, 1), (2, 1), (2, 2), (4, 1)):
        cmd = [sys.executable, __file__, "--thread-child", str(intra), str(inter), "--runs", str(args.runs)]
        cmd += ["--inception-weights", args.inception_weights]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        last = out.stdout.strip().splitlines()[-1:] or ["{}"]
        try:
            result = json.loads(last[0])
        except json.JSONDecodeError:
            result = {"error": out.stderr[-300:]}
        label = "default (0, 0)" if intra == 0 else f"intra={intra} inter={inter}"
        rows.append({"threads": label, **result})
        print(f"  {label:<20} {result}", flush=True)
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
    parser.add_argument("--min-seconds", type=float, default=8.0, help="time per throughput measurement")
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

    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "batch": args.batch, "backbones": []}
    for spec in args.backbones:
        name, options = parse_backbone(spec)
        weights = args.inception_weights if name == "inception_v3" else None
        start = time.perf_counter()
        backbone = load_backbone(name, weights=weights, **options)
        row = bench_backbone(backbone, files, args)
        row["backbone"], row["weights"], row["load_s"] = spec, backbone.weights, time.perf_counter() - start
        results["backbones"].append(row)
        print(f"measured {spec}", flush=True)
    print()
    print_table(
        results["backbones"],
        [
            ("backbone", "backbone", "<"),
            ("input", "input", "d"),
            ("weights", "weights", "<"),
            ("batch_img_s", "model img/s @batch", ".1f"),
            ("single_p50_ms", "embed 1 p50 ms", ".1f"),
            ("single_p90_ms", "p90 ms", ".1f"),
            ("query_p50_ms", "decode+prep+embed 1 p50 ms", ".1f"),
            ("decode_serial_img_s", "decode+prep img/s (1 thread)", ".0f"),
            ("pipeline_img_s", "pipeline img/s", ".1f"),
            ("pipeline_images", "files", "d"),
        ],
    )

    if not args.skip_variants:
        print("\nInceptionV3 single-image latency (one 299x299 image unless noted):")
        results["inception_variants"] = inception_variants(args)
        print()
        print_table(
            results["inception_variants"],
            [("variant", "variant", "<34"), ("p50_ms", "p50 ms", ".1f"), ("p90_ms", "p90 ms", ".1f"),
             ("cos_vs_ref", "cos vs eager", ".6f"), ("note", "note", "<")],
        )  # fmt: skip
        if not args.skip_threads:
            print("\nTensorFlow thread pools (fresh process each; InceptionV3 299, tf.function):")
            results["threads"] = thread_sweep(args)
            print()
            print_table(
                results["threads"],
                [("threads", "threads", "<20"), ("p50_ms", "embed 1 p50 ms", ".1f"),
                 ("batch_img_s", "img/s @32", ".1f")],
            )  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
