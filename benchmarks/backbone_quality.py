"""Sequential-scan retrieval quality of the offline backbones on TU-Berlin-40 (the paper's Section 4.3 protocol).

Protocol: for each of the 40 classes, the 20 sketches with the highest numeric ids are queries (800) and the other
60 are the collection (2,400). Each query ranks the whole collection by cosine similarity; relevant = same class
(R = 60); AP is averaged over the full ranking and mAP over the 800 queries. The same is then repeated with the
6,756 photos of ``../shared/data/photos`` (clothing + one ImageNet sample per class; ``preprocess_photo``) added to
the collection as distractors, which are never relevant.

Variants: sketch stroke dilation 0/1/2 (``preprocess_sketch(dilate=...)``), per backbone.

Embeddings are cached in ``var/cache/quality_*.npz`` (keyed by backbone, weights, kind, margin and dilation), so a
rerun only recomputes what changed::

    .venv/bin/python benchmarks/backbone_quality.py                                # mobilenet_v1, dilation 0 1 2
    .venv/bin/python benchmarks/backbone_quality.py --backbones mobilenet_v1 darknet_tiny --dilations 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from indexing.features.backbones import Backbone, load_backbone  # noqa: E402
from indexing.features.pipeline import ImageKind, embed_images  # noqa: E402

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CACHE_DIR = REPO_ROOT / "var" / "cache"
TEST_PER_CLASS = 20


def average_precisions(similarities: np.ndarray, query_labels: np.ndarray, item_labels: np.ndarray) -> np.ndarray:
    """AP of each query over the full ranking of the collection; R = items sharing the query's label."""
    order = np.argsort(-similarities, axis=1, kind="stable")
    ranked_labels = item_labels[order]
    num_relevant = (item_labels[None, :] == query_labels[:, None]).sum(axis=1)
    try:  # the project's own metric when the evaluation package is present
        from evaluation.metrics import average_precision_from_ranking

        return average_precision_from_ranking(ranked_labels, num_relevant, query_labels=query_labels)
    except ImportError:
        relevant = ranked_labels == query_labels[:, None]
        hits = np.cumsum(relevant, axis=1)
        precision = hits / np.arange(1, relevant.shape[1] + 1)
        return (precision * relevant).sum(axis=1) / num_relevant


def tu_berlin_split(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray, list[str]]:
    """All sketches (sorted by class, then numeric id), their labels, a test mask, and the class names."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    is_test: list[bool] = []
    for label, name in enumerate(classes):
        files = sorted((root / name).glob("*.png"), key=lambda p: int(p.stem))
        paths.extend(files)
        labels.extend([label] * len(files))
        is_test.extend([i >= len(files) - TEST_PER_CLASS for i in range(len(files))])
    return paths, np.asarray(labels), np.asarray(is_test), classes


def photo_paths(root: Path) -> list[Path]:
    return sorted((root / "clothing").glob("*.jpg")) + sorted((root / "imagenet-samples").glob("*.jpg"))


def cached_embeddings(
    backbone: Backbone, paths: Sequence[Path], *, kind: ImageKind, dilate: int, margin: float, tag: str
) -> np.ndarray:
    weights = Path(backbone.weights).name if os.sep in backbone.weights else backbone.weights
    key = f"quality_{backbone.name}_{weights}_{tag}_{kind}_m{margin:g}_d{dilate}.npz"
    cache = CACHE_DIR / key
    names = np.asarray([str(p.relative_to(p.parents[1])) for p in paths])
    if cache.is_file():
        stored = np.load(cache)
        if stored["names"].shape == names.shape and (stored["names"] == names).all():
            return stored["vectors"]
    start = time.perf_counter()
    vectors = np.zeros((len(paths), backbone.dim), dtype=np.float32)
    failures: list[tuple[int, str]] = []
    for ids, batch, errors in embed_images(enumerate(paths), backbone, kind=kind, margin=margin, dilate=dilate):
        vectors[ids] = batch
        failures.extend(errors)
    seconds = time.perf_counter() - start
    print(
        f"  embedded {len(paths)} {kind} images ({key}) in {seconds:.0f} s = {len(paths) / seconds:.1f} img/s",
        flush=True,
    )
    for image_id, message in failures:
        print(f"  skipped {paths[image_id]}: {message}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, names=names, vectors=vectors)
    return vectors


def evaluate(args: argparse.Namespace) -> list[dict[str, Any]]:
    root = args.data / "tu-berlin-40" / "png"
    if not root.is_dir():
        raise SystemExit(f"TU-Berlin-40 not found at {root}")
    paths, labels, is_test, classes = tu_berlin_split(root)
    photos = photo_paths(args.data / "photos") if not args.no_photos else []
    print(
        f"{len(classes)} classes, {int(is_test.sum())} queries, {int((~is_test).sum())} collection sketches, "
        f"{len(photos)} distractor photos"
    )
    rows: list[dict[str, Any]] = []
    for spec in args.backbones:
        name, _, weights = spec.partition(":")
        backbone = load_backbone(name, weights=weights or None)
        print(f"{spec}: {backbone.dim}-d, input {backbone.input_size}, {backbone.param_count:,} parameters", flush=True)
        photo_vectors = (
            cached_embeddings(backbone, photos, kind="photo", dilate=0, margin=0, tag="photos") if photos else None
        )
        for dilate in args.dilations:
            vectors = cached_embeddings(
                backbone, paths, kind="sketch", dilate=dilate, margin=args.margin, tag="tuberlin40"
            )
            queries, query_labels = vectors[is_test], labels[is_test]
            collection, collection_labels = vectors[~is_test], labels[~is_test]
            sims = queries @ collection.T
            ap = average_precisions(sims, query_labels, collection_labels)
            top10 = np.argsort(-sims, axis=1)[:, :10]
            per_class = [float(ap[query_labels == c].mean()) for c in range(len(classes))]
            row: dict[str, Any] = {
                "backbone": spec,
                "dilate": dilate,
                "margin": args.margin,
                "map": float(ap.mean()),
                "p_at_10": float((collection_labels[top10] == query_labels[:, None]).mean()),
                "worst_classes": [
                    (classes[c], round(float(ap[query_labels == c].mean()), 3)) for c in np.argsort(per_class)[:3]
                ],
                "best_classes": [
                    (classes[c], round(float(ap[query_labels == c].mean()), 3)) for c in np.argsort(per_class)[::-1][:3]
                ],
            }
            if photo_vectors is not None:
                sims_all = np.concatenate([sims, queries @ photo_vectors.T], axis=1)
                labels_all = np.concatenate([collection_labels, np.full(len(photo_vectors), -1)])
                ap_all = average_precisions(sims_all, query_labels, labels_all)
                top10_all = np.argsort(-sims_all, axis=1)[:, :10]
                row["map_with_photos"] = float(ap_all.mean())
                row["photos_in_top10"] = float((labels_all[top10_all] == -1).mean())
                # How often a photo outranks at least one relevant sketch (the ranking changed at all).
                worst_relevant = np.where(collection_labels[None, :] == query_labels[:, None], sims, np.inf).min(axis=1)
                row["queries_photo_above_relevant"] = float(
                    ((queries @ photo_vectors.T).max(axis=1) > worst_relevant).mean()
                )
            baseline = next((r for r in rows if r["backbone"] == spec), None)
            if baseline is not None:
                # Paired bootstrap over the 800 queries: is the change against the first dilation real or noise?
                diff = ap - np.asarray(baseline["_ap"])
                rng = np.random.default_rng(0)
                boots = diff[rng.integers(0, diff.size, (2000, diff.size))].mean(axis=1)
                row["vs_first_dilation"] = {
                    "dilate": baseline["dilate"],
                    "delta_map": float(diff.mean()),
                    "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
                    "classes_improved": int(sum(diff[query_labels == c].mean() > 0 for c in range(len(classes)))),
                }
            row["_ap"] = ap.tolist()
            rows.append(row)
            print(f"  dilate={dilate}: mAP {row['map']:.4f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v1"], help="name or name:weights")
    parser.add_argument("--dilations", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="folder holding tu-berlin-40/ and photos/")
    parser.add_argument("--no-photos", action="store_true", help="skip the distractor run")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    rows = evaluate(args)
    chance = 60 / 2400
    print(f"\nsequential scan, cosine; AP over the full ranking, R = 60; chance mAP ~ {chance:.3f}\n")
    header = (
        f"{'backbone':<14} {'dilate':>6} {'mAP':>7} {'P@10':>6} {'mAP +6756 photos':>17} {'delta':>9} "
        f"{'photos in top10':>16} {'queries w/ a photo above a relevant':>36}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        with_photos = f"{r['map_with_photos']:.4f}" if "map_with_photos" in r else "-"
        delta = f"{r['map_with_photos'] - r['map']:+.5f}" if "map_with_photos" in r else "-"
        share = f"{r['photos_in_top10']:.3f}" if "photos_in_top10" in r else "-"
        above = f"{r['queries_photo_above_relevant']:.3f}" if "queries_photo_above_relevant" in r else "-"
        print(
            f"{r['backbone']:<14} {r['dilate']:>6} {r['map']:>7.4f} {r['p_at_10']:>6.3f} {with_photos:>17} {delta:>9} "
            f"{share:>16} {above:>36}"
        )
    print()
    for r in rows:
        print(f"{r['backbone']} dilate={r['dilate']}: worst {r['worst_classes']}  best {r['best_classes']}")
        if "vs_first_dilation" in r:
            v = r["vs_first_dilation"]
            print(
                f"    vs dilate={v['dilate']}: mAP {v['delta_map']:+.4f}, paired-bootstrap 95% CI "
                f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}], {v['classes_improved']}/40 classes improved"
            )
    for r in rows:
        r.pop("_ap", None)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
