from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from indexing.models import Collection
from indexing.selectors import index_get_active
from indexing.services.extraction import collection_extract_features
from indexing.services.importer import collection_import
from indexing.services.index import DEFAULT_CENTER, DEFAULT_FAMILY, index_build
from indexing.services.served_heads import sketch_extractor_get_or_create

DEMO_NAME = "demo"
DEMO_TEST_PER_CLASS = 20  # TU-Berlin's 60/20 split (the paper's), kept for every measurement


class Command(BaseCommand):
    help = (
        "Load the embedded demo collection (TU-Berlin-40, 3,200 sketches), embed it with the served extractor (the "
        "shipped MobileNetV1 + MobileNetV2 pair + the shipped sketch head) and build its tuned index. Idempotent: a "
        "second run only checks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default=DEMO_NAME)

    def handle(self, *args: Any, **options: Any) -> None:
        report = collection_import(
            path=settings.BASE_DIR / "data" / "demo",
            name=options["name"],
            kind="sketches",
            test_per_class=DEMO_TEST_PER_CLASS,
        )
        self.stdout.write(report.summary())
        collection = Collection.objects.get(name=options["name"])
        extractor = sketch_extractor_get_or_create()
        # The head maps the base vectors: the CNNs run once per image, for the base row (extraction reuses it): the
        # shipped MobileNetV1 + MobileNetV2 on thinned strokes (mobilenet_v1v2-thin), as the head was trained.
        extraction = collection_extract_features(collection=collection, extractor=extractor)
        if extraction.embedded or extraction.failed:
            self.stdout.write(extraction.summary())
        active = index_get_active()
        if extraction.embedded or active is None or active.extractor_id != extractor.pk:
            index = index_build(
                extractor=extractor, collections=[collection], family=DEFAULT_FAMILY, center=DEFAULT_CENTER
            )
            self.stdout.write(
                f"built {index} (id {index.pk}) over {index.item_count} images in {index.build_seconds:.2f} s, "
                f"{index.probes} probes (tuned for recall@10 >= {index.tuning['target_recall']} on its own sketches)"
                if index.tuning
                else f"built {index} (id {index.pk}) over {index.item_count} images"
            )
        else:
            self.stdout.write(
                f"index ready: {active} (id {active.pk}), extractor {extractor.name} on "
                f"{extractor.details['base_extractor']}"
            )
