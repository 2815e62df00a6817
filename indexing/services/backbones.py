"""An Extractor row -> its runnable Backbone, loaded and warmed up once per process (web and worker processes).

One module for every kind of row: a plain registered backbone (``indexing.features.backbones.BACKBONES``), a
trained head over its base (Models 1-5, ``indexing.features.heads``), the served sketch head
(``indexing.features.sketch_head``) and a joint sketch/photo head (``indexing.features.crossdomain``). The training
and extraction services both read it and it imports neither, so they import each other no more.

The caches are keyed by the backbone's registration (its :class:`~indexing.features.backbones.BackboneSpec`), so a
backbone registered again under the same name (``register_backbone(..., replace=True)``) is loaded afresh.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from django.conf import settings

from indexing.features.backbones import Backbone, BackboneSpec, backbone_spec, load_backbone, warm_up
from indexing.features.crossdomain import JOINT_HEAD, JointBackbone, load_joint_head
from indexing.features.heads import HeadBackbone, load_head
from indexing.features.sketch_head import RETRIEVAL_LAYER as SKETCH_RETRIEVAL_LAYER
from indexing.features.sketch_head import SHIPPED_HEAD, load_head_file
from indexing.models import Extractor

SKETCH_HEAD = "sketch"  # Extractor.head of the served sketch head (indexing.features.sketch_head)

_loaded: set[tuple[str, str]] = set()
_loading = threading.RLock()  # one load at a time: a warm-up thread and a first search then share one model


def backbone_load(*, backbone: str, weights: str) -> Backbone:
    """The registered backbone ``backbone`` with ``weights``, loaded once per process and warmed up.

    Raises:
        ValueError: An unregistered backbone.
        WeightsUnavailableError: The weights are neither on disk nor downloadable.
    """
    return _base_load(backbone_spec(backbone), weights)


@functools.lru_cache(maxsize=4)
def _base_load(spec: BackboneSpec, weights: str) -> Backbone:
    model = load_backbone(spec.name, weights=weights)
    warm_up(model)
    return model


def extractor_backbone(extractor: Extractor) -> Backbone:
    """The Backbone that embeds images for ``extractor``: its registered backbone, or its head over its base."""
    with _loading:
        if extractor.head:
            backbone = extractor_head_backbone(extractor)
        else:
            backbone = backbone_load(backbone=extractor.backbone, weights=extractor.weights)
        _loaded.add((extractor.backbone, extractor.weights))
    return backbone


def extractor_thins_strokes(extractor: Extractor) -> bool:
    """Whether ``extractor`` thins a sketch's strokes before its backbone (``preprocess_sketch(thin=True)``).

    Its rows' ``details["sketch_thin"]``: a base row made with ``thin``, and a head over such a base (which copies
    it), so indexed sketches and drawn queries go through the same preprocessing.
    """
    return bool((extractor.details or {}).get("sketch_thin"))


def extractor_is_loaded(extractor: Extractor) -> bool:
    """Whether this process has loaded (and warmed up) the extractor's model already."""
    return (extractor.backbone, extractor.weights) in _loaded


def head_backbones_cache_clear() -> None:
    """Forget every loaded head (a head file was replaced: the next use loads it again); bases stay loaded."""
    for cached in (_head_backbone_load, _sketch_head_backbone_load, _joint_backbone_load):
        cached.cache_clear()


def extractor_head_backbone(extractor: Extractor) -> Backbone:
    """The Backbone of a trained extractor: its base (fine-tuned where it was) + the head's retrieval layer."""
    details = extractor.details or {}
    base_spec = backbone_spec(extractor.backbone)
    base_weights = str(details.get("base_weights") or "")
    if extractor.head == SKETCH_HEAD:
        # The served head (indexing.features.sketch_head): shipped in the package, or trained into MEDIA_ROOT.
        file = Path(settings.MEDIA_ROOT) / str(extractor.weights_file.name) if extractor.weights_file else SHIPPED_HEAD
        return _sketch_head_backbone_load(
            name=extractor.name, base=base_spec, base_weights=base_weights, path=str(file), mtime=_mtime(file)
        )
    if not extractor.weights_file:
        raise ValueError(f"extractor {extractor.name} has head {extractor.head!r} but no weights file")
    path = Path(settings.MEDIA_ROOT) / str(extractor.weights_file.name)
    if extractor.head == JOINT_HEAD:
        return _joint_backbone_load(
            name=extractor.name,
            base=base_spec,
            base_weights=base_weights,
            photo_input=str(details.get("photo_input") or "photo"),
            path=str(path),
            mtime=_mtime(path),
        )
    return _head_backbone_load(
        name=extractor.name,
        base=base_spec,
        base_weights=base_weights,
        input_size=extractor.input_size,
        path=str(path),
        layer=details.get("retrieval_layer"),
        mtime=_mtime(path),
    )


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


def _shared_base(base: BackboneSpec, base_weights: str) -> Backbone:
    # A head over an unchanged base shares the process-wide cached base backbone.
    return _base_load(base, base_weights or base.default_weights)


@functools.lru_cache(maxsize=4)
def _head_backbone_load(
    *, name: str, base: BackboneSpec, base_weights: str, input_size: int, path: str, layer: str | None, mtime: float
) -> Backbone:
    head, bundle = load_head(path)
    if bundle is None:
        model = _shared_base(base, base_weights)  # head-only: the base is unchanged
    else:
        # Fine-tuned: a private copy of the base (the cached one must keep its pretrained weights).
        model = load_backbone(base.name, weights=base_weights or None, input_size=input_size)
        nested = next(lyr for lyr in bundle.layers if lyr.name not in ("head", "l2_normalize") and lyr.weights)
        model.model.set_weights(nested.get_weights())  # type: ignore[attr-defined]
    wrapper = HeadBackbone(model, head, name=name, layer=layer)
    warm_up(wrapper)
    return wrapper


@functools.lru_cache(maxsize=4)
def _sketch_head_backbone_load(
    *, name: str, base: BackboneSpec, base_weights: str, path: str, mtime: float
) -> Backbone:
    head, _, _ = load_head_file(path)
    wrapper = HeadBackbone(
        _shared_base(base, base_weights), head, name=name, layer=SKETCH_RETRIEVAL_LAYER, weights="shipped"
    )
    warm_up(wrapper)
    return wrapper


@functools.lru_cache(maxsize=4)
def _joint_backbone_load(
    *, name: str, base: BackboneSpec, base_weights: str, photo_input: str, path: str, mtime: float
) -> Backbone:
    sketch_branch, photo_branch = load_joint_head(path)
    wrapper = JointBackbone(
        _shared_base(base, base_weights), sketch_branch, photo_branch, name=name, photo_input=photo_input
    )
    warm_up(wrapper)
    return wrapper
