"""The served heads as Extractor rows: the shipped sketch head (a head file over a frozen base) and joint heads.

Split from :mod:`indexing.services.training` (which trains the paper's Models 1-5 and owns the row-replacing
rules these share): storing a head that was trained elsewhere is its own concern.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from indexing.features.crossdomain import JOINT_HEAD, PHOTO_INPUTS, save_joint_head
from indexing.features.sketch_head import RETRIEVAL_LAYER as SKETCH_RETRIEVAL_LAYER
from indexing.features.sketch_head import SHIPPED_HEAD, load_head_file
from indexing.models import Extractor
from indexing.services.backbones import SKETCH_HEAD, extractor_thins_strokes, head_backbones_cache_clear
from indexing.services.training import (
    EXTRACTORS_DIR,
    TRAINED_WEIGHTS,
    TrainingError,
    base_extractor_resolve,
    trained_extractor_save,
)

SKETCH_EXTRACTOR = "mobilenet_v1v2-sketch"  # the shipped head's Extractor row
# Earlier names of that row (its base was mobilenet_v1 alone): a database that has one renames it on first use.
LEGACY_SKETCH_EXTRACTORS = ("mobilenet_v1-sketch",)


def sketch_extractor_get_or_create(*, path: Path = SHIPPED_HEAD, name: str = SKETCH_EXTRACTOR) -> Extractor:
    """The Extractor row of a sketch head file (indexing.features.sketch_head), created or updated from the file.

    The shipped file is read from the package (no copy under MEDIA_ROOT); another file is served from its path,
    which must lie under MEDIA_ROOT. A row whose file changed (other weights: its ``meta`` differs) loses its
    vectors, so the next extraction recomputes them.
    """
    head, classes, meta = load_head_file(path)
    base = base_extractor_resolve(str(meta.get("backbone") or "mobilenet_v1"), thin=bool(meta.get("sketch_thin")))
    fields: dict[str, Any] = {
        "backbone": base.backbone,
        "head": SKETCH_HEAD,
        "weights": "shipped" if path == SHIPPED_HEAD else TRAINED_WEIGHTS,
        "input_size": base.input_size,
        "output_dim": len(classes),
        "param_count": int(base.param_count) + int(head.count_params()),
        "details": {
            "strategy": "head-only",
            "base_extractor": base.name,
            "base_weights": base.weights,
            "retrieval_layer": SKETCH_RETRIEVAL_LAYER,
            "classes": classes,
            "sketch_dilate": (base.details or {}).get("sketch_dilate"),
            "sketch_thin": extractor_thins_strokes(base),
            "training": meta,
        },
    }
    existing = Extractor.objects.filter(name=name).first()
    if existing is None and name == SKETCH_EXTRACTOR:
        # The shipped head's row of an earlier release: renamed, then replaced below (its vectors and indexes go).
        legacy = Extractor.objects.filter(name__in=LEGACY_SKETCH_EXTRACTORS, head=SKETCH_HEAD, weights="shipped")
        existing = legacy.first()
        if existing is not None:
            existing.name = name
    if existing is not None and existing.head != SKETCH_HEAD:
        raise TrainingError(f"extractor {name!r} exists and is not a sketch head: choose another name")
    if existing is not None and existing.details == fields["details"] and existing.weights == fields["weights"]:
        return existing
    weights_name = ""
    if path != SHIPPED_HEAD:
        media = Path(settings.MEDIA_ROOT).resolve()
        if media not in path.resolve().parents:
            raise TrainingError(f"a trained head file must lie under MEDIA_ROOT ({media}), not {path}")
        weights_name = str(path.resolve().relative_to(media))
    notes: list[str] = []
    row = trained_extractor_save(name=name, existing=existing, fields=fields, weights_name=weights_name, notes=notes)
    head_backbones_cache_clear()
    return row


def joint_extractor_save(
    *,
    name: str,
    backbone: str,
    sketch_branch: Any,
    photo_branch: Any,
    photo_input: str,
    details: dict[str, Any],
) -> tuple[Extractor, list[str]]:
    """Store a trained joint sketch/photo head (``indexing.features.crossdomain``) as a servable Extractor.

    The file goes to ``MEDIA_ROOT/extractors/<name>.keras``. Extracting features with the extractor embeds sketch
    collections with the sketch branch and photo collections with the photo branch; a drawn query always takes
    the sketch branch. An existing extractor of the same name is replaced and its old vectors are deleted.

    Returns:
        The row and notes for the user.

    Raises:
        TrainingError: Unknown base backbone, bad ``photo_input``, or ``name`` taken by a non-joint extractor.
    """
    if photo_input not in PHOTO_INPUTS:
        raise TrainingError(f"photo_input must be one of {PHOTO_INPUTS}, got {photo_input!r}")
    base = base_extractor_resolve(backbone)
    if int(sketch_branch.input_shape[-1]) != base.output_dim:
        raise TrainingError(
            f"the head takes {sketch_branch.input_shape[-1]}-d vectors, {base.name} gives {base.output_dim}-d"
        )
    existing = Extractor.objects.filter(name=name).first()
    if existing is not None and existing.head != JOINT_HEAD:
        raise TrainingError(f"extractor {name!r} exists and is not a joint head: choose another name")
    folder = Path(settings.MEDIA_ROOT) / EXTRACTORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights_name = f"{EXTRACTORS_DIR}/{name}.keras"
    save_joint_head(str(folder / f"{name}.keras"), sketch_branch, photo_branch)
    shared = sketch_branch is photo_branch
    head_params = int(sketch_branch.count_params()) + (0 if shared else int(photo_branch.count_params()))
    fields: dict[str, Any] = {
        "backbone": base.backbone,
        "head": JOINT_HEAD,
        "weights": TRAINED_WEIGHTS,
        "input_size": base.input_size,
        "output_dim": int(sketch_branch.output_shape[-1]),
        "param_count": int(base.param_count) + head_params,
        "details": {
            "base_extractor": base.name,
            "base_weights": base.weights,
            "photo_input": photo_input,
            "head_params": head_params,
            "sketch_dilate": (base.details or {}).get("sketch_dilate"),
            **details,
        },
    }
    notes: list[str] = []
    row = trained_extractor_save(name=name, existing=existing, fields=fields, weights_name=weights_name, notes=notes)
    head_backbones_cache_clear()
    return row, notes
