from __future__ import annotations

import functools
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from indexing.features.backbones import WeightsUnavailableError, available_backbones
from indexing.models import Collection, Extractor
from indexing.services.extraction import collection_extract_features, extractor_get_or_create


class Command(BaseCommand):
    help = "Embed every image of a collection with an extractor (only the images without a vector, unless --force)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--collection", required=True, action="append", help="collection name (repeatable)")
        parser.add_argument("--extractor", default="mobilenet_v1", help="extractor name (default mobilenet_v1)")
        parser.add_argument(
            "--backbone", default=None, help=f"backbone of a new extractor: {', '.join(available_backbones())}"
        )
        parser.add_argument("--weights", default=None, help="imagenet | PATH | none | shipped (backbone default)")
        parser.add_argument("--force", action="store_true", help="re-embed images that already have a vector")
        parser.add_argument("--chunk-size", type=int, default=64)

    def handle(self, *args: Any, **options: Any) -> None:
        existing = Extractor.objects.filter(name=options["extractor"]).first()
        if existing is not None and options["backbone"] is None and options["weights"] is None:
            extractor = existing  # e.g. a trained extractor (mobilenet_v1-model4): its row says how to load it
        else:
            try:
                extractor = extractor_get_or_create(
                    name=options["extractor"],
                    backbone=options["backbone"] or options["extractor"],
                    weights=options["weights"],
                )
            except (WeightsUnavailableError, ValueError) as exc:
                raise CommandError(str(exc)) from exc
        for name in options["collection"]:
            collection = Collection.objects.filter(name=name).first()
            if collection is None:
                raise CommandError(f"no collection named {name!r}; import it with import_collection")
            bar = tqdm(unit="img", desc=f"{extractor.name} {name}", disable=options["verbosity"] == 0)
            try:
                report = collection_extract_features(
                    collection=collection,
                    extractor=extractor,
                    force=options["force"],
                    chunk_size=options["chunk_size"],
                    progress=bar.update,
                    on_total=functools.partial(setattr, bar, "total"),
                )
            finally:
                bar.close()
            for image_id, message in report.failed:
                self.stderr.write(f"image {image_id}: {message}")
            self.stdout.write(report.summary())
