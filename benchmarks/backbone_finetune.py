"""Fine-tune the float MobileNets under the served sketch head, measured on the Quick, Draw! validation folds.

The served head maps frozen vectors of the quantised MobileNetV1 + MobileNetV2 pair. Their float rebuilds
(``mobilenet_v1_float``, ``mobilenet_v2_float``, :mod:`indexing.features.tflite_float`) can be trained; this script
measures what that gives strangers' drawings, with the validation protocol of docs/relevance.md: per fold, the
served recipe (one member: thinned strokes, the photo class, cuts at weight 0.5) trains on TU-Berlin-40's 3,200
sketches and the Quick, Draw! drawings of the 37 shared words of the other folds; the queries are the fold's
drawings, whole and at 50% of their strokes, drawn as the page draws them; the gallery is the 3,200 TU-Berlin
sketches; exact scan on L2-normalised class probabilities. Phase 1 trains the head on frozen vectors (the
"frozen" row), phase 2 the chosen part of the network with it (the "fine-tuned" row):

- ``--strategy two-blocks`` (CPU, ~6 min a fold here): MobileNetV2's blocks 15-16 and Conv_1; the rest (all of
  MobileNetV1, MobileNetV2 up to ``expanded_conv_14_add``) runs once per view, and the blocks train on that cache.
  The procedure of docs/relevance.md's "Fine-tuning MobileNetV2's last two blocks" (there with the TFLite
  MobileNetV1, here with its float rebuild: cosine 0.9997).
- ``--strategy all`` (meant for a GPU): both networks end to end, every epoch on fresh augmented views
  (``indexing.features.augment``: rotation, mirror, stretch, pen 1-8 px, cuts; TU-Berlin rotation, mirror,
  thickening), which a frozen cache could never give.

    .venv/bin/python benchmarks/backbone_finetune.py --strategy two-blocks --folds 0,1,2
    .venv/bin/python benchmarks/backbone_finetune.py --strategy all --epochs 10 --batch-size 128   # on a GPU

``--words N --tu-per-class N --photo-views N`` make a small smoke run (the tests run one). Prints a line per fold,
writes ``var/bench/backbone_finetune.json``, and ends with one line:
``backbone fine-tuning (two-blocks, folds 0,1,2): p@10 0.727 -> 0.753 whole, 0.517 -> 0.522 at 50%; hit@1 ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sketchsite.settings")  # sample_photo_views reads the settings
DATA = ROOT.parent / "shared" / "data"
V2_CUT = "expanded_conv_14_add"


@dataclass
class Items:
    """The protocol's sources: TU-Berlin files and Quick, Draw! drawings, with labels and folds."""

    tu_files: list[Path]
    tu_labels: np.ndarray
    drawings: list[Any]
    qd_labels: np.ndarray
    qd_folds: np.ndarray


def load_items(data: Path, *, words: int | None, tu_per_class: int | None) -> Items:
    """TU-Berlin sketches and the Quick, Draw! drawings of the words that name a TU-Berlin class."""
    from indexing.features.quickdraw import read_folder
    from indexing.features.sketch_head import WORD_ALIASES, quickdraw_folds, tu_berlin_files

    files = tu_berlin_files(data / "tu-berlin-40")
    classes = sorted({label for _, label in files})
    if words is not None:
        classes = classes[:words]
    per_class: dict[str, int] = {}
    kept = []
    for path, label in files:
        if label in classes and (tu_per_class is None or per_class.get(label, 0) < tu_per_class):
            per_class[label] = per_class.get(label, 0) + 1
            kept.append((path, label))
    drawings = [d for d in read_folder(data / "quickdraw-344") if WORD_ALIASES.get(d.word, d.word) in classes]
    if not kept or not drawings:
        raise SystemExit(f"no TU-Berlin sketch or Quick, Draw! drawing of a shared class under {data}")
    return Items(
        tu_files=[path for path, _ in kept],
        tu_labels=np.array([label for _, label in kept]),
        drawings=drawings,
        qd_labels=np.array([WORD_ALIASES.get(d.word, d.word) for d in drawings]),
        qd_folds=quickdraw_folds(drawings),
    )


def render(items: Items, *, tu: np.ndarray, qd: np.ndarray, cut: float, rng: np.random.Generator | None) -> np.ndarray:
    """uint8 ``(n, 224, 224, 3)`` views of the chosen items, thinned as the served head sees them.

    Plain views (``rng`` None): TU-Berlin files as they are, drawings as the page draws them, cut after ``cut`` of
    their strokes. Augmented views (``rng`` given): ``raster_view`` / ``drawing_view`` (their own random cuts).
    """
    from indexing.features.augment import AugmentSpec, drawing_view, page_render, raster_view
    from indexing.features.preprocess import load_image, preprocess_sketch
    from indexing.features.quickdraw import cut_strokes

    spec = AugmentSpec()
    seeds = rng.integers(0, 2**31, len(tu) + len(qd)) if rng is not None else np.zeros(len(tu) + len(qd), int)

    def one(job: tuple[str, int, int]) -> np.ndarray:
        source, index, seed = job
        local = np.random.default_rng(seed) if rng is not None else None
        if source == "tu":
            image = load_image(items.tu_files[index])
            image = raster_view(image, local, spec) if local is not None else image
        else:
            strokes = items.drawings[index].strokes
            image = drawing_view(strokes, local, spec) if local is not None else page_render(cut_strokes(strokes, cut))
        return preprocess_sketch(image, 224, thin=True)

    jobs = [("tu", int(i), int(s)) for i, s in zip(tu, seeds[: len(tu)], strict=True)]
    jobs += [("qd", int(i), int(s)) for i, s in zip(qd, seeds[len(tu) :], strict=True)]
    if not jobs:
        return np.zeros((0, 224, 224, 3), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return np.stack(list(pool.map(one, jobs)))


def photo_views(count: int) -> np.ndarray:
    """The photo class's views (scikit-image's sample photos, as ``train_sketch_head`` makes them)."""
    import django

    django.setup()
    from indexing.features.preprocess import preprocess_photo
    from indexing.services.sketch_views import sample_photo_views

    crops = sample_photo_views(views=count)
    return np.stack([preprocess_photo(crop, 224) for crop in crops])


def build_models(num_classes: int, seed: int) -> dict[str, Any]:
    """The float pair (pixels -> front -> [V1 | V2] / sqrt 2) and a fresh served-recipe head on it.

    ``front`` is what the two-blocks strategy keeps frozen (V1's pooled vector, V2's cut activation) and
    ``base_tail`` what it trains (V2's last blocks); ``whole`` chains them with the head, sharing every layer.
    """
    import keras

    from indexing.features.backbones import load_backbone
    from indexing.features.sketch_head import HeadRecipe, build_sketch_head
    from indexing.features.tflite_float import TFLITE_FLOAT_SCALING
    from indexing.features.training import frozen_and_tail

    keras.utils.set_random_seed(seed)
    v1 = load_backbone("mobilenet_v1_float").model  # type: ignore[attr-defined]
    v2 = load_backbone("mobilenet_v2_float").model  # type: ignore[attr-defined]
    scale, offset = TFLITE_FLOAT_SCALING
    pixels = keras.Input((224, 224, 3), name="pixels")
    scaled = keras.layers.Rescaling(scale, offset)(pixels)
    v2_front, v2_tail = frozen_and_tail(v2, V2_CUT)
    # The "frozen part" the two-blocks cache holds: V1's pooled vector and V2's cut activation.
    front = keras.Model(pixels, [v1(scaled), v2_front(scaled)], name="front")
    v1_in, cut_in = keras.Input((1024,)), keras.Input(tuple(v2_front.output_shape[1:]))
    pair = keras.layers.Concatenate()(
        [keras.layers.UnitNormalization()(v1_in), keras.layers.UnitNormalization()(v2_tail(cut_in))]
    )
    base_tail = keras.Model([v1_in, cut_in], keras.layers.Rescaling(2**-0.5)(pair), name="pair_tail")
    recipe = HeadRecipe(members=1, seed=seed)
    head = build_sketch_head(2304, num_classes, recipe)
    whole = keras.Model(pixels, head(base_tail(front(pixels))), name="whole")
    return {"front": front, "base_tail": base_tail, "head": head, "whole": whole, "recipe": recipe}


def predict(model: Any, inputs: Any, batch: int = 64) -> Any:
    """``model(inputs)`` in batches (inputs: an array or a list of arrays with one first axis)."""
    arrays = inputs if isinstance(inputs, list) else [inputs]
    n = len(arrays[0])
    outs: list[list[np.ndarray]] = []
    for start in range(0, n, batch):
        out = model([a[start : start + batch] for a in arrays] if len(arrays) > 1 else arrays[0][start : start + batch])
        outs.append([np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])])
    merged = [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]
    return merged if len(merged) > 1 else merged[0]


def metrics(
    queries: np.ndarray, q_labels: np.ndarray, gallery: np.ndarray, g_labels: np.ndarray
) -> tuple[float, float]:
    """p@10 and hit@1 of an exact cosine scan (class relevance)."""
    from indexing.features.vectors import l2_normalize

    scores = l2_normalize(queries) @ l2_normalize(gallery).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    relevant = g_labels[top] == q_labels[:, None]
    return float(relevant.mean()), float(relevant[:, 0].mean())


def run_fold(fold: int, items: Items, args: argparse.Namespace, photos: np.ndarray) -> dict[str, Any]:
    """Phase 1 and phase 2 on one fold; the frozen and fine-tuned figures."""
    import keras

    from indexing.features.sketch_head import CUTS, PHOTO_CLASS

    train_qd = np.flatnonzero(items.qd_folds != fold)
    query_qd = np.flatnonzero(items.qd_folds == fold)
    all_tu = np.arange(len(items.tu_files))
    labels = np.concatenate([items.tu_labels, items.qd_labels[train_qd]])
    plain = render(items, tu=all_tu, qd=train_qd, cut=1.0, rng=None)
    cuts = [render(items, tu=all_tu[:0], qd=train_qd, cut=c, rng=None) for c in CUTS]
    images = np.concatenate([plain, *cuts, photos])
    row_labels = np.concatenate([labels, *([items.qd_labels[train_qd]] * len(CUTS)), [PHOTO_CLASS] * len(photos)])
    weights = np.concatenate(
        [np.ones(len(plain)), np.full(len(train_qd) * len(CUTS), 0.5), np.ones(len(photos))]
    ).astype(np.float32)
    classes = np.unique(row_labels)
    targets = np.searchsorted(classes, row_labels)
    models = build_models(len(classes), args.seed)
    recipe = models["recipe"]
    front_out = predict(models["front"], images)
    base = predict(models["base_tail"], front_out)
    head = models["head"]
    head.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss="sparse_categorical_crossentropy")
    head.fit(base, targets, sample_weight=weights, epochs=args.head_epochs, batch_size=recipe.batch_size, verbose=0)

    # The gallery (TU-Berlin's plain views, the first rows of ``images``) and the queries, as front activations:
    # the front is frozen until an ``all`` phase 2 trains it.
    gallery_images = plain[: len(all_tu)]
    gallery_front = [part[: len(all_tu)] for part in front_out]
    queries = {
        name: render(items, tu=all_tu[:0], qd=query_qd, cut=c, rng=None) for name, c in (("whole", 1.0), ("50%", 0.5))
    }
    query_fronts = {name: predict(models["front"], q) for name, q in queries.items()}
    q_labels = items.qd_labels[query_qd]

    def classify(fronts: list[np.ndarray]) -> np.ndarray:
        return predict(head, predict(models["base_tail"], fronts))

    def measure(*, front_trained: bool) -> dict[str, tuple[float, float]]:
        if front_trained:  # the front changed: run every image through the whole network again
            gallery = predict(models["whole"], gallery_images)
            found = {name: predict(models["whole"], q) for name, q in queries.items()}
        else:
            gallery = classify(gallery_front)
            found = {name: classify(fronts) for name, fronts in query_fronts.items()}
        return {name: metrics(found[name], q_labels, gallery, items.tu_labels) for name in queries}

    out: dict[str, Any] = {"fold": fold, "frozen": measure(front_trained=False), "train_rows": len(images)}
    started = time.perf_counter()
    if args.epochs:
        if args.strategy == "two-blocks":
            model = keras.Model(models["base_tail"].inputs, head(models["base_tail"].outputs[0]))
            model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy")
            model.fit(
                front_out, targets, sample_weight=weights, epochs=args.epochs, batch_size=args.batch_size, verbose=0
            )
        else:
            model = models["whole"]
            model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy")
            rng = np.random.default_rng(args.seed)
            for _ in range(args.epochs):  # fresh augmented views every epoch (their own random cuts)
                views = render(items, tu=all_tu, qd=train_qd, cut=1.0, rng=rng)
                epoch_images = np.concatenate([views, photos])
                epoch_targets = np.searchsorted(classes, np.concatenate([labels, [PHOTO_CLASS] * len(photos)]))
                model.fit(epoch_images, epoch_targets, epochs=1, batch_size=args.batch_size, verbose=0)
    out["fine_tune_s"] = round(time.perf_counter() - started, 1)
    out["fine_tuned"] = measure(front_trained=args.strategy == "all" and args.epochs > 0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=("two-blocks", "all"), default="two-blocks")
    parser.add_argument("--folds", default="0,1,2", help="validation folds (0-4), comma-separated")
    parser.add_argument("--epochs", type=int, default=10, help="phase 2 epochs (0: the frozen row only)")
    parser.add_argument("--head-epochs", type=int, default=60, help="phase 1 epochs (the served recipe's 60)")
    parser.add_argument("--lr", type=float, default=None, help="phase 2 Adam rate (two-blocks 1e-4, all 1e-5)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with tu-berlin-40/ and quickdraw-344/")
    parser.add_argument("--words", type=int, default=None, help="smoke run: the first N shared classes only")
    parser.add_argument("--tu-per-class", type=int, default=None, help="smoke run: N TU-Berlin sketches per class")
    parser.add_argument("--photo-views", type=int, default=300, help="photo-class crops per sample photo")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "backbone_finetune.json")
    args = parser.parse_args()
    args.lr = args.lr if args.lr is not None else (1e-4 if args.strategy == "two-blocks" else 1e-5)
    folds = [int(f) for f in args.folds.split(",")]
    if not (args.data / "tu-berlin-40").is_dir() or not (args.data / "quickdraw-344").is_dir():
        raise SystemExit(f"needs {args.data}/tu-berlin-40 and {args.data}/quickdraw-344 (../shared/data)")
    items = load_items(args.data, words=args.words, tu_per_class=args.tu_per_class)
    photos = photo_views(args.photo_views)
    results = []
    for fold in folds:
        result = run_fold(fold, items, args, photos)
        results.append(result)
        print(json.dumps(result), flush=True)
    mean = {
        stage: {view: np.mean([r[stage][view] for r in results], axis=0).round(3).tolist() for view in ("whole", "50%")}
        for stage in ("frozen", "fine_tuned")
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"setup": setup, "folds": results, "mean": mean}, indent=1))
    f, t = mean["frozen"], mean["fine_tuned"]
    print(
        f"backbone fine-tuning ({args.strategy}, folds {args.folds}): p@10 {f['whole'][0]:.3f} -> {t['whole'][0]:.3f}"
        f" whole, {f['50%'][0]:.3f} -> {t['50%'][0]:.3f} at 50%; hit@1 {f['whole'][1]:.3f} -> {t['whole'][1]:.3f}"
        f" whole, {f['50%'][1]:.3f} -> {t['50%'][1]:.3f} at 50%"
    )


if __name__ == "__main__":
    main()
