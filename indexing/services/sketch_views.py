"""The served head's training views and the protocols' extra query sets, embedded once and cached under var/."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django.conf import settings

from indexing.features.backbones import Backbone, load_backbone
from indexing.features.preprocess import load_image, preprocess_photo, preprocess_sketch
from indexing.features.sketch_head import HeadRecipe, ViewCache, embed_views

SHARED_DATA = settings.BASE_DIR.parent / "shared" / "data"
CACHE_DIR = Path(settings.MEDIA_ROOT).parent / "cache"


class DataMissingError(FileNotFoundError):
    """A data folder the command needs is not there; the message names it."""


def _require(folder: Path) -> Path:
    if not folder.is_dir():
        raise DataMissingError(f"no data folder at {folder} (see ../shared/data/README.md)")
    return folder


def shipped_backbone() -> Backbone:
    return load_backbone("mobilenet_v1")


def sketch_view_cache(
    *,
    tu_berlin: Path,
    quickdraw: Path,
    recipe: HeadRecipe,
    cache: Path | None,
    say: Callable[[str], object] = print,
) -> ViewCache:
    """The training views' backbone vectors: read from ``cache`` when it holds the recipe's views, else embedded."""
    if cache is not None and cache.exists():
        loaded = ViewCache.load(cache)
        wanted = {f"raster{v}" for v in range(recipe.raster_views)} | {
            f"drawing{v}" for v in range(recipe.drawing_views)
        }
        if wanted <= set(loaded.views):
            say(f"views read from {cache}")
            return loaded
    started = time.perf_counter()
    views = embed_views(shipped_backbone(), tu_berlin=_require(tu_berlin), quickdraw=_require(quickdraw), recipe=recipe)
    say(f"embedded {len(views.labels):,} drawings' views in {time.perf_counter() - started:.0f} s")
    if cache is not None:
        views.save(cache)
    return views


def folder_vectors(
    folder: Path, *, kind: str, cache: Path | None, label_of: Callable[[Path], str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, labels) of every image under ``folder`` (``<class>/<file>``), embedded by the frozen backbone.

    ``kind`` "sketch" or "photo" picks the preprocessing. Cached in ``cache`` (an .npz) when given.
    """
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return data["vectors"], data["labels"]
    files = sorted(p for p in _require(folder).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    backbone = shipped_backbone()
    prepare = preprocess_sketch if kind == "sketch" else preprocess_photo
    parts = []
    for start in range(0, len(files), 128):
        batch = np.stack([prepare(load_image(p), backbone.input_size) for p in files[start : start + 128]])
        parts.append(backbone.embed(batch))
    vectors = np.concatenate(parts) if parts else np.zeros((0, backbone.dim), np.float32)
    labels = np.array([(label_of or (lambda p: p.parent.name))(p) for p in files])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, vectors=vectors, labels=labels)
    return vectors, labels


def negative_photos(*, folder: Path | None = None, cache: Path | None = None) -> np.ndarray:
    """Backbone vectors of the Sketchy photos, the head's photo class (never the distractor photos measured)."""
    vectors, _ = folder_vectors(
        folder or SHARED_DATA / "sketchy-125" / "photo",
        kind="photo",
        cache=cache if cache is not None else CACHE_DIR / "sketchy-photo-vectors.npz",
    )
    return vectors
