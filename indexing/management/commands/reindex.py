from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from indexing.services.index import index_reindex


class Command(BaseCommand):
    help = "Rebuild the active index with its own parameters (picking up new features) and flip it active."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        index = index_reindex(name=options["name"])
        if index is None:
            raise CommandError(f"no active index named {options['name']!r}; run build_index first")
        self.stdout.write(f"built {index} over {index.item_count} images in {index.build_seconds:.2f} s; active")
