from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluation.models import EvaluationRun
from evaluation.protocol_maths import label_key
from evaluation.protocols import Look, Scores, lsh_scores, scan_scores, tuned_index
from evaluation.reports import markdown_table
from indexing.features.sketch_head import CUTS, FOLDS, RETRIEVAL_LAYER, HeadRecipe, TrainingSet, fit_sketch_head
from indexing.features.training import head_embed
from indexing.services.sketch_views import (
    CACHE_DIR,
    SHARED_DATA,
    DataMissingError,
    add_photo_class_arguments,
    folder_vectors,
    negative_photos,
    sketch_view_cache,
)

FLOOR = settings.SKETCHSEARCH_MIN_CANDIDATES  # "through the served default index": as a served search probes
K = 10  # the hits a protocol scores (p@10), as many as a served search asks for here


def _look(queries: np.ndarray, gallery: np.ndarray) -> Look | None:
    """The served look tie-break over the base vectors (None when SKETCHSEARCH_LOOK_WEIGHT switches it off)."""
    weight = float(settings.SKETCHSEARCH_LOOK_WEIGHT)
    return Look(queries, gallery, weight, K) if weight > 0 else None  # a search orders the k hits it shows


TU_TEST_PER_CLASS = 20  # the paper's 60/20 split: the last 20 sketches of each class by id


def _tu_test_rows(keys: np.ndarray, labels: np.ndarray, tu: np.ndarray) -> np.ndarray:
    test = np.zeros(len(keys), dtype=bool)
    for label in np.unique(labels[tu]):
        rows = np.flatnonzero(tu & (labels == label))
        order = rows[np.argsort([int(k) if str(k).isdigit() else 0 for k in keys[rows]], kind="stable")]
        test[order[-TU_TEST_PER_CLASS:]] = True
    return test


class Command(BaseCommand):
    help = (
        "Relevance for real people's drawings (issue: served model, train for how people draw): trains the served "
        "head's recipe on folds and reports mAP, p@10 and hit@1 by exact scan and through the tuned default index, "
        "for (1) Quick, Draw! validation folds against the TU-Berlin gallery, whole and cut after 25/50/75% of the "
        "strokes, (2) sketchy-125 sketches of the shared classes against TU-Berlin (head trained on its train "
        "split), (3) TU-Berlin test sketches against its train split with the photos as distractors; each beside "
        "the frozen backbone without a head. The head's rankings are ordered by look as a served search orders them "
        "(SKETCHSEARCH_LOOK_WEIGHT), and the index also without it. Stored as an evaluation run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tu-berlin", type=Path, default=SHARED_DATA / "tu-berlin-40")
        parser.add_argument("--quickdraw", type=Path, default=SHARED_DATA / "quickdraw-344")
        parser.add_argument("--sketchy", type=Path, default=SHARED_DATA / "sketchy-125" / "sketch")
        parser.add_argument("--photos", type=Path, default=SHARED_DATA / "photos")
        parser.add_argument("--folds", type=int, default=FOLDS, help="Quick, Draw! folds to run (of 5)")
        parser.add_argument("--epochs", type=int, default=HeadRecipe.epochs)
        add_photo_class_arguments(parser)
        parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="folder of the embedding caches")
        parser.add_argument("--skip", default="", help="comma-separated protocols to skip: quickdraw,sketchy,within")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["members"] < 1:
            raise CommandError(f"--members must be 1 or more, got {options['members']}")
        recipe = HeadRecipe(
            epochs=options["epochs"],
            photo_weight=options["photo_weight"],
            members=options["members"],
            thin_strokes=not options["plain_strokes"],
            backbone=options["backbone"],
        )
        skip = {s for s in options["skip"].split(",") if s}
        cache: Path = options["cache"]
        try:
            views = sketch_view_cache(
                tu_berlin=options["tu_berlin"],
                quickdraw=options["quickdraw"],
                recipe=recipe,
                cache=cache / "sketch-head-views.npz",
                say=self.stdout.write,
            )
            photos = (
                negative_photos(
                    folder=options["negative_photos"],
                    cache=None if options["negative_photos"] is None else cache / "photo-class-vectors.npz",
                    backbone=recipe.backbone,
                )
                if recipe.photo_weight > 0
                else None
            )
        except DataMissingError as exc:
            raise CommandError(str(exc)) from exc
        tu = views.source == "tu"
        gallery, gallery_labels = views.views["plain"][tu], views.labels[tu]
        results: dict[str, Any] = {}
        started = time.perf_counter()
        if "quickdraw" not in skip:
            results["quickdraw"] = self._quickdraw(views, recipe, gallery, gallery_labels, options["folds"], photos)
        if "sketchy" not in skip or "within" not in skip:
            tu_test = _tu_test_rows(views.keys, views.labels, tu)
            head = fit_sketch_head(TrainingSet.from_cache(views, ~tu_test, recipe, photos), recipe)
            embed = _embedder(head)
            if "sketchy" not in skip:
                results["sketchy"] = self._sketchy(
                    options["sketchy"], cache, embed, gallery, gallery_labels, recipe=recipe
                )
            if "within" not in skip:
                results["within"] = self._within(views, tu, tu_test, options["photos"], cache, embed, recipe.backbone)
        run = EvaluationRun.objects.create(
            kind=EvaluationRun.Kind.RELEVANCE,
            parameters={"recipe": recipe.as_dict()},
            results=results | {"seconds": round(time.perf_counter() - started, 1)},
        )
        self.stdout.write(f"stored as evaluation run #{run.pk} (relevance)")

    def _table(self, title: str, rows: list[dict[str, Any]]) -> None:
        self.stdout.write(f"\n{title}")
        self.stdout.write(markdown_table(rows, list(rows[0])))

    def _quickdraw(
        self,
        views: Any,
        recipe: HeadRecipe,
        gallery: np.ndarray,
        gallery_labels: np.ndarray,
        folds: int,
        photos: np.ndarray | None,
    ) -> dict[str, Any]:
        qd = views.source == "qd"
        stages = {"whole": "plain"} | {f"{round(c * 100)}%": f"cut{round(c * 100)}" for c in CUTS}
        per_fold: dict[str, list[Scores]] = {}
        for fold in range(folds):
            held = qd & (views.fold == fold)
            head = fit_sketch_head(TrainingSet.from_cache(views, ~held, recipe, photos), recipe)
            embed = _embedder(head)
            served_gallery = embed(gallery)
            index, tuning = tuned_index(served_gallery)
            for stage, view in stages.items():
                queries, labels = views.views[view][held], views.labels[held]
                served = embed(queries)
                look = _look(queries, gallery)
                per_fold.setdefault(f"head, scan, {stage}", []).append(
                    scan_scores(served, labels, served_gallery, gallery_labels, look=look)
                )
                per_fold.setdefault(f"head, index, {stage}", []).append(
                    lsh_scores(
                        index, tuning.chosen.probes, served, labels, gallery_labels, min_candidates=FLOOR, look=look
                    )
                )
                if stage == "whole":
                    per_fold.setdefault(f"head, index, look off, {stage}", []).append(
                        lsh_scores(index, tuning.chosen.probes, served, labels, gallery_labels, min_candidates=FLOOR)
                    )
                per_fold.setdefault(f"head, scan + alpha-QE, {stage}", []).append(
                    scan_scores(served, labels, served_gallery, gallery_labels, expansion=5)
                )
                if fold == 0:
                    per_fold.setdefault(f"no head, scan, {stage}", []).append(
                        scan_scores(queries, labels, gallery, gallery_labels)
                    )
        rows = [_mean_row(name, scores) for name, scores in per_fold.items()]
        self._table(f"Quick, Draw! validation ({folds} folds of 3 drawings per word) against TU-Berlin", rows)
        return {"folds": folds, "rows": rows}

    def _sketchy(
        self,
        folder: Path,
        cache: Path,
        embed: Any,
        gallery: np.ndarray,
        gallery_labels: np.ndarray,
        *,
        recipe: HeadRecipe,
    ) -> dict[str, Any]:
        vectors, labels = folder_vectors(
            folder,
            kind="sketch",
            cache=cache / "sketchy-vectors.npz",
            label_of=lambda p: p.parent.name,
            thin=recipe.thin_strokes,
            backbone=recipe.backbone,
        )
        keyed = np.array([label_key(label) for label in labels])
        gallery_labels = np.array([label_key(label) for label in gallery_labels])  # "wine_bottle" = "wine-bottle"
        keep = np.isin(keyed, gallery_labels)
        served_gallery = embed(gallery)
        index, tuning = tuned_index(served_gallery)
        served = embed(vectors[keep])
        look = _look(vectors[keep], gallery)
        rows = [
            _row("no head, scan", scan_scores(vectors[keep], keyed[keep], gallery, gallery_labels)),
            _row("head, scan", scan_scores(served, keyed[keep], served_gallery, gallery_labels, look=look)),
            _row(
                "head, index",
                lsh_scores(
                    index, tuning.chosen.probes, served, keyed[keep], gallery_labels, min_candidates=FLOOR, look=look
                ),
            ),
            _row(
                "head, index, look off",
                lsh_scores(index, tuning.chosen.probes, served, keyed[keep], gallery_labels, min_candidates=FLOOR),
            ),
            _row(
                "head, scan + alpha-QE",
                scan_scores(served, keyed[keep], served_gallery, gallery_labels, expansion=5),
            ),
        ]
        self._table(f"sketchy-125 ({len(np.unique(keyed[keep]))} shared classes) against TU-Berlin", rows)
        return {"rows": rows}

    def _within(
        self, views: Any, tu: np.ndarray, tu_test: np.ndarray, photos: Path, cache: Path, embed: Any, backbone: str
    ) -> dict[str, Any]:
        photo_vectors, _ = folder_vectors(
            photos, kind="photo", cache=cache / "photo-vectors.npz", label_of=lambda p: "", backbone=backbone
        )
        train, test = tu & ~tu_test, tu_test
        base_gallery = np.concatenate([views.views["plain"][train], photo_vectors])
        look_of_head = _look(views.views["plain"][test], base_gallery)
        rows = []
        for name, transform in (("no head", lambda x: x), ("head", embed)):
            gallery = np.concatenate([transform(views.views["plain"][train]), transform(photo_vectors)])
            labels = np.concatenate([views.labels[train], np.full(len(photo_vectors), "")])
            queries = transform(views.views["plain"][test])
            look = look_of_head if name == "head" else None
            scan = scan_scores(queries, views.labels[test], gallery, labels, look=look)
            similarities = queries @ gallery.T
            top = np.argsort(-similarities, axis=1, kind="stable")
            if look is not None:
                top = np.stack([look.reorder(q, row, similarities[q, row]) for q, row in enumerate(top)])
            top = top[:, :10]
            row = _row(f"{name}, scan", scan) | {"photos in top 10": round(float((top >= train.sum()).mean()), 4)}
            rows.append(row)
            if name == "head":
                index, tuning = tuned_index(gallery)
                returned: list[np.ndarray] = []
                indexed = lsh_scores(
                    index,
                    tuning.chosen.probes,
                    queries,
                    views.labels[test],
                    labels,
                    min_candidates=FLOOR,
                    top=returned,
                    look=look,
                )
                share = float(np.mean([(ids >= train.sum()).mean() if len(ids) else 0.0 for ids in returned]))
                rows.append(_row("head, index", indexed) | {"photos in top 10": round(share, 4)})
                rows.append(
                    _row(
                        "head, index, look off",
                        lsh_scores(
                            index, tuning.chosen.probes, queries, views.labels[test], labels, min_candidates=FLOOR
                        ),
                    )
                    | {"photos in top 10": "-"}
                )
                rows.append(
                    _row(
                        "head, scan + alpha-QE", scan_scores(queries, views.labels[test], gallery, labels, expansion=5)
                    )
                    | {"photos in top 10": "-"}  # not counted for the expanded ranking
                )
        self._table(f"TU-Berlin test ({test.sum()}) against its train split + {len(photo_vectors)} photos", rows)
        return {"rows": rows}


def _embedder(head: Any) -> Any:
    return lambda features: head_embed(head, features, RETRIEVAL_LAYER)


def _row(name: str, scores: Scores) -> dict[str, Any]:
    return {"method": name} | scores.as_dict()


def _mean_row(name: str, scores: list[Scores]) -> dict[str, Any]:
    return {
        "method": name,
        "mAP": round(float(np.mean([s.map for s in scores])), 4),
        "p@10": round(float(np.mean([s.p10 for s in scores])), 4),
        "hit@1": round(float(np.mean([s.hit1 for s in scores])), 4),
        "queries": int(sum(s.queries for s in scores)),
        "candidates": round(float(np.mean([s.candidates for s in scores])), 1),
    }
