"""Comparing the trained extractors (the paper's Figure 4: test mAP against model complexity)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from indexing.features.training import scan_map
from indexing.models import Collection, Extractor, Image
from indexing.selectors import features_load
from indexing.services.training import EXTRACTORS_DIR, collection_resolve


@dataclass(frozen=True)
class ComparisonRow:
    collection: str
    extractor: str
    backbone: str
    head: str  # "" for an untrained base
    strategy: str
    params: int
    test_map: float
    test_accuracy: float | None
    source: str  # "features": scan of stored Feature rows; "training": the figure recorded at training time


def _scan_map_of_features(extractor: Extractor, collection: Collection) -> float | None:
    train = features_load(extractor=extractor, collection_ids=[collection.pk], split=Image.Split.TRAIN)
    test = features_load(extractor=extractor, collection_ids=[collection.pk], split=Image.Split.TEST)
    train_labelled, test_labelled = train.labels != "", test.labels != ""
    if not train_labelled.any() or not test_labelled.any():
        return None
    try:
        return scan_map(
            test.vectors[test_labelled],
            test.labels[test_labelled],
            train.vectors[train_labelled],
            train.labels[train_labelled],
        )
    except ValueError:
        return None


def extractor_comparison(*, collection_name: str | None = None) -> list[ComparisonRow]:
    """Every trained extractor of a collection (or of every collection trained on) and the untrained bases.

    The test mAP is a sequential scan of the stored vectors (test split queries against the train split) when the
    extractor has them for the collection, else the figure measured at training time.
    """
    if collection_name is not None:
        collections = [collection_resolve(collection_name)]
    else:
        names = {
            str((e.details or {}).get("collection"))
            for e in Extractor.objects.exclude(head="")
            if (e.details or {}).get("collection")
        }
        collections = list(Collection.objects.filter(name__in=names).order_by("name"))
    rows: list[ComparisonRow] = []
    for collection in collections:
        for extractor in Extractor.objects.order_by("head", "name"):
            details = extractor.details or {}
            if extractor.head and details.get("collection") != collection.name:
                continue
            value = _scan_map_of_features(extractor, collection)
            source = "features"
            if value is None:
                if not extractor.head:
                    continue  # an untrained base with no vectors for this collection: nothing to compare
                value, source = float(details["test_map"]), "training"
            accuracy = details.get("test_accuracy")
            rows.append(
                ComparisonRow(
                    collection=collection.name,
                    extractor=extractor.name,
                    backbone=extractor.backbone,
                    head=extractor.head,
                    strategy=str(details.get("strategy", "untrained" if not extractor.head else "")),
                    params=int(extractor.param_count),
                    test_map=float(value),
                    test_accuracy=float(accuracy) if accuracy is not None else None,
                    source=source,
                )
            )
    return rows


def comparison_plot_png(rows: list[ComparisonRow], *, title: str) -> bytes:
    """Test mAP (x) against parameters (y), one labelled point per extractor, as the paper's Figure 4."""
    import io

    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=110)
    axes = figure.add_subplot()
    for row in rows:
        marker = "s" if not row.head else "o"
        axes.scatter([row.test_map], [row.params / 1e6], marker=marker)
        axes.annotate(
            row.extractor, (row.test_map, row.params / 1e6), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    axes.set_xlabel("test mAP (sequential scan)")
    axes.set_ylabel("parameters (millions)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def comparison_plot_save(rows: list[ComparisonRow], *, collection_name: str | None) -> str:
    """Write the comparison figure under MEDIA_ROOT/extractors/ and return its media-relative path."""
    suffix = f"-{collection_name}" if collection_name else ""
    relative = f"{EXTRACTORS_DIR}/compare_models{suffix}.png"
    target = Path(settings.MEDIA_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    title = f"Test mAP vs model complexity ({collection_name or 'all collections'})"
    target.write_bytes(comparison_plot_png(rows, title=title))
    return relative
