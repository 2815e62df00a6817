from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from indexing.services.importer import collection_import

DEMO_NAME = "demo"


class Command(BaseCommand):
    help = "Load the embedded demo collection (data/demo). Idempotent: a second run only checks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default=DEMO_NAME)

    def handle(self, *args: Any, **options: Any) -> None:
        report = collection_import(
            path=settings.BASE_DIR / "data" / "demo", name=options["name"], kind="sketches", test_per_class=4
        )
        self.stdout.write(report.summary())
