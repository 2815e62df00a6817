from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from indexing.features.backbones import DEFAULT_BACKBONE, WeightsUnavailableError, load_backbone
from indexing.models import Collection
from indexing.services.extraction import collection_extract_features, extractor_get_or_create
from indexing.services.importer import collection_import
from indexing.services.index import index_build, index_get_active

DEMO_NAME = "demo"


class Command(BaseCommand):
    help = "Load the embedded demo collection, embed it and build its index. Idempotent: a second run only checks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default=DEMO_NAME)

    def handle(self, *args: Any, **options: Any) -> None:
        report = collection_import(
            path=settings.BASE_DIR / "data" / "demo", name=options["name"], kind="sketches", test_per_class=4
        )
        self.stdout.write(report.summary())
        collection = Collection.objects.get(name=options["name"])
        backbone = self._choose_backbone()
        extractor = extractor_get_or_create(backbone=backbone)
        extraction = collection_extract_features(collection=collection, extractor=extractor)
        if extraction.embedded or extraction.failed:
            self.stdout.write(extraction.summary())
        active = index_get_active()
        if extraction.embedded or active is None or active.extractor_id != extractor.pk:
            index = index_build(
                extractor=extractor, collections=[collection], family="binary", num_tables=8, hashes_per_table=6,
                center=True,
            )  # fmt: skip
            self.stdout.write(f"built {index} over {index.item_count} images in {index.build_seconds:.2f} s")
        else:
            self.stdout.write(f"index ready: {active}")

    def _choose_backbone(self) -> str:
        # The paper's extractor when its ImageNet weights can be had; otherwise say so and use the shipped model.
        try:
            load_backbone("inception_v3", weights="imagenet")
        except WeightsUnavailableError as exc:
            self.stdout.write(f"InceptionV3 ImageNet weights unavailable ({exc}); using the shipped {DEFAULT_BACKBONE}")
            return DEFAULT_BACKBONE
        return "inception_v3"
