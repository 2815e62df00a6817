from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser

from indexing.features.sketch_head import SHIPPED_HEAD, HeadRecipe, TrainingSet, fit_sketch_head, save_head
from indexing.services.sketch_views import (
    CACHE_DIR,
    SHARED_DATA,
    DataMissingError,
    add_photo_class_arguments,
    negative_photos,
    sketch_view_cache,
)

MAX_HEAD_BYTES = 10 * 1024 * 1024


class Command(BaseCommand):
    help = (
        "Train the served sketch head (indexing/features/sketch_head.py) on TU-Berlin and Quick, Draw! drawings over "
        "the frozen shipped MobileNetV1 + MobileNetV2 (--backbone), and write its int8 weights (default: the shipped "
        "file). One Quick, Draw! fold is held out (default 0) so the served model can be validated on drawings it "
        "never saw."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tu-berlin", type=Path, default=SHARED_DATA / "tu-berlin-40", help="png/<class>/<id>.png")
        parser.add_argument("--quickdraw", type=Path, default=SHARED_DATA / "quickdraw-344", help="<word>.ndjson files")
        parser.add_argument(
            "--hold-out-fold", type=int, default=0, help="Quick, Draw! fold 0-4 not trained on; -1: none"
        )
        parser.add_argument("--output", type=Path, default=SHIPPED_HEAD)
        parser.add_argument("--cache", type=Path, default=CACHE_DIR / "sketch-head-views.npz")
        parser.add_argument("--epochs", type=int, default=HeadRecipe.epochs)
        parser.add_argument("--seed", type=int, default=HeadRecipe.seed)
        add_photo_class_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["members"] < 1:
            raise CommandError(f"--members must be 1 or more, got {options['members']}")
        recipe = HeadRecipe(
            epochs=options["epochs"],
            seed=options["seed"],
            photo_weight=options["photo_weight"],
            members=options["members"],
            thin_strokes=not options["plain_strokes"],
            backbone=options["backbone"],
        )
        fold = options["hold_out_fold"]
        if not -1 <= fold <= 4:
            raise CommandError(f"--hold-out-fold must be -1..4, got {fold}")
        try:
            views = sketch_view_cache(
                tu_berlin=options["tu_berlin"],
                quickdraw=options["quickdraw"],
                recipe=recipe,
                cache=options["cache"],
                say=self.stdout.write,
            )
            photos = (
                negative_photos(folder=options["negative_photos"], backbone=recipe.backbone)
                if recipe.photo_weight > 0
                else None
            )
        except DataMissingError as exc:
            raise CommandError(str(exc)) from exc
        rows = views.fold != fold if fold >= 0 else np.ones(len(views.labels), dtype=bool)
        data = TrainingSet.from_cache(views, rows, recipe, photos)
        started = time.perf_counter()
        head = fit_sketch_head(data, recipe, verbose=0)
        seconds = time.perf_counter() - started
        meta = {
            "backbone": recipe.backbone,
            "sketch_thin": recipe.thin_strokes,  # the base row the head maps: mobilenet_v1v2-thin
            "recipe": recipe.as_dict(),
            "hold_out_fold": fold,
            "train_rows": int(len(data.targets)),
            "tu_berlin_sketches": int(((views.source == "tu") & rows).sum()),
            "quickdraw_drawings": int(((views.source == "qd") & rows).sum()),
            "photos": 0 if photos is None else int(len(photos)),
            "training_seconds": round(seconds, 1),
            "command": "manage.py train_sketch_head"
            + (f" --hold-out-fold {fold}" if fold else "")
            + ("" if recipe.thin_strokes else " --plain-strokes")
            + ("" if recipe.backbone == HeadRecipe.backbone else f" --backbone {recipe.backbone}"),
            "data": "TU-Berlin (Eitz et al. 2012, CC BY 4.0); Quick, Draw! (Google Creative Lab, CC BY 4.0)"
            + _photo_credit(photos, options["negative_photos"]),
        }
        size = save_head(head, options["output"], classes=[str(c) for c in data.classes], meta=meta)
        if size > MAX_HEAD_BYTES:
            raise CommandError(f"{options['output']} is {size:,} bytes, over the {MAX_HEAD_BYTES:,} allowed")
        self.stdout.write(
            f"trained on {len(data.targets):,} rows ({meta['tu_berlin_sketches']} TU-Berlin sketches, "
            f"{meta['quickdraw_drawings']} Quick, Draw! drawings, {len(data.classes)} classes) in {seconds:.0f} s; "
            f"wrote {options['output']} ({size / 1e6:.1f} MB)"
        )


def _photo_credit(photos: np.ndarray | None, folder: Path | None) -> str:
    if photos is None:
        return ""
    if folder is not None:
        return f"; photos of {folder}"
    return "; scikit-image's sample photos (public domain / CC0; retina.jpg CC BY 4.0, M. Häggström)"
