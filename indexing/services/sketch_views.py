"""The served head's training views and the protocols' extra query sets, embedded once and cached under var/."""

from __future__ import annotations

import functools
import time
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image

from indexing.features.backbones import Backbone, available_backbones, load_backbone
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


SERVED_BACKBONE = HeadRecipe.backbone


def shipped_backbone(name: str = SERVED_BACKBONE) -> Backbone:
    """The frozen backbone the served head maps (``HeadRecipe.backbone``), or another registered one."""
    return load_backbone(name)


def sketch_view_cache(
    *,
    tu_berlin: Path,
    quickdraw: Path,
    recipe: HeadRecipe,
    cache: Path | None,
    say: Callable[[str], object] = print,
) -> ViewCache:
    """The training views' backbone vectors: read from ``cache`` when it holds the recipe's views, else embedded.

    Thinned strokes (``recipe.thin_strokes``) are cached beside plain ones, in ``<cache stem>-thin.npz``, and the
    vectors of another backbone than ``mobilenet_v1`` (``recipe.backbone``) in ``<cache stem>-<backbone>[-thin].npz``.
    """
    cache = _styled(cache, recipe.thin_strokes, recipe.backbone)
    if cache is not None and cache.exists():
        loaded = ViewCache.load(cache)
        wanted = {f"raster{v}" for v in range(recipe.raster_views)} | {
            f"drawing{v}" for v in range(recipe.drawing_views)
        }
        if wanted <= set(loaded.views):
            say(f"views read from {cache}")
            return loaded
    started = time.perf_counter()
    views = embed_views(
        shipped_backbone(recipe.backbone), tu_berlin=_require(tu_berlin), quickdraw=_require(quickdraw), recipe=recipe
    )
    say(f"embedded {len(views.labels):,} drawings' views in {time.perf_counter() - started:.0f} s")
    if cache is not None:
        views.save(cache)
    return views


def _styled(cache: Path | None, thin: bool, backbone: str) -> Path | None:
    return None if cache is None else _named(cache, thin, backbone)


def _named(cache: Path, thin: bool, backbone: str) -> Path:
    stem = cache.stem if backbone == "mobilenet_v1" else f"{cache.stem}-{backbone}"
    return cache.with_name(f"{stem}-thin{cache.suffix}" if thin else f"{stem}{cache.suffix}")


def folder_vectors(
    folder: Path,
    *,
    kind: str,
    cache: Path | None,
    label_of: Callable[[Path], str] | None = None,
    thin: bool = False,
    backbone: str = SERVED_BACKBONE,
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, labels) of every image under ``folder`` (``<class>/<file>``), embedded by the frozen ``backbone``.

    ``kind`` "sketch" or "photo" picks the preprocessing; ``thin`` thins a sketch's strokes first. Cached in ``cache``
    (an .npz; thinned sketches in ``<stem>-thin.npz``, another backbone's vectors in ``<stem>-<backbone>...``) when
    given.
    """
    thin = thin and kind == "sketch"
    cache = _styled(cache, thin, backbone)
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return data["vectors"], data["labels"]
    files = sorted(p for p in _require(folder).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    model = shipped_backbone(backbone)
    prepare = functools.partial(preprocess_sketch, thin=thin) if kind == "sketch" else preprocess_photo
    parts = []
    for start in range(0, len(files), 128):
        batch = np.stack([prepare(load_image(p), model.input_size) for p in files[start : start + 128]])
        parts.append(model.embed(batch))
    vectors = np.concatenate(parts) if parts else np.zeros((0, model.dim), np.float32)
    labels = np.array([(label_of or (lambda p: p.parent.name))(p) for p in files])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, vectors=vectors, labels=labels)
    return vectors, labels


# scikit-image's bundled sample photos that are public domain or CC0 (its data README), plus retina (CC BY 4.0,
# M. Häggström): the photo class's source when no other photos may be used (the repository ships weights).
SAMPLE_PHOTOS = (
    "astronaut.png", "brick.png", "chelsea.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "rocket.jpg", "retina.jpg",
)  # fmt: skip
SAMPLE_VIEWS = 300  # random crops per sample photo


def sample_photo_views(*, views: int = SAMPLE_VIEWS, seed: int = 0) -> list[Image.Image]:
    """Random crops (10-100% of the side), flips, quarter turns and brightness changes of the sample photos."""
    import importlib.resources

    from PIL import ImageEnhance

    rng = np.random.default_rng(seed)
    try:
        folder = importlib.resources.files("skimage") / "data"  # scikit-image (requirements-dev.txt): its files only
    except ModuleNotFoundError as exc:
        raise DataMissingError(
            "the photo class's sample photos come with scikit-image (pip install -r requirements-dev.txt), or give "
            "--negative-photos FOLDER, or train without the class (--photo-weight 0)"
        ) from exc
    crops: list[Image.Image] = []
    for name in SAMPLE_PHOTOS:
        with (folder / name).open("rb") as handle:
            photo = Image.open(handle).convert("RGB")
            photo.load()
        width, height = photo.size
        for _ in range(views):
            side = int(min(width, height) * rng.uniform(0.1, 1.0))
            left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            crop = photo.crop((left, top, left + side, top + side))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop = crop.rotate(90 * int(rng.integers(0, 4)), expand=True)
            crops.append(ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.6, 1.4))))
    return crops


def negative_photos(
    *, folder: Path | None = None, cache: Path | None = None, backbone: str = SERVED_BACKBONE
) -> np.ndarray:
    """``backbone`` vectors of the photo class's photos: a folder's, or (``folder`` None) the sample photos' views.

    Never the distractor photos the protocols measure.
    """
    if folder is not None:
        return folder_vectors(folder, kind="photo", cache=cache, backbone=backbone)[0]
    cache = _named(cache if cache is not None else CACHE_DIR / "sample-photo-vectors.npz", False, backbone)
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return np.asarray(data["vectors"])
    model = shipped_backbone(backbone)
    crops = sample_photo_views()
    parts = [
        model.embed(np.stack([preprocess_photo(c, model.input_size) for c in crops[start : start + 128]]))
        for start in range(0, len(crops), 128)
    ]
    vectors = np.concatenate(parts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors)
    return vectors


def add_photo_class_arguments(parser: ArgumentParser) -> None:
    """The recipe options of train_sketch_head and evaluate_relevance.

    ``--backbone``, ``--members``, ``--plain-strokes``, ``--photo-weight`` and ``--negative-photos``.
    """
    parser.add_argument(
        "--backbone",
        default=HeadRecipe.backbone,
        choices=available_backbones(),
        help=f"the frozen backbone the head maps (served: {HeadRecipe.backbone})",
    )
    parser.add_argument(
        "--members", type=int, default=HeadRecipe.members, help="heads averaged (an ensemble; 1: a single head)"
    )
    parser.add_argument(
        "--plain-strokes",
        action="store_true",
        help="sketches reach the backbone as drawn, not thinned to one-pixel strokes (the served recipe thins them)",
    )
    parser.add_argument(
        "--photo-weight", type=float, default=HeadRecipe.photo_weight, help="the photo class's weight (0: none)"
    )
    parser.add_argument(
        "--negative-photos",
        type=Path,
        default=None,
        help="a photo folder for the photo class (default: scikit-image's public-domain sample photos)",
    )
