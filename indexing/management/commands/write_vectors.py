from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from indexing.models import LSHIndex
from indexing.serving import vector_file_get, vector_folder, vector_folders_prune


class Command(BaseCommand):
    help = (
        "Write this machine's vector folder of every active index version where it is missing, unreadable or of an "
        "older format (from the Feature rows), and delete the folders of versions that no longer exist. Run it "
        "before the web workers start on a new machine or after an upgrade, so that no first search pays for it "
        "(at a million images that is minutes)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for index in LSHIndex.objects.select_related("extractor").filter(is_active=True).order_by("pk"):
            started = time.perf_counter()
            vectors = vector_file_get(index)
            self.stdout.write(
                f"{index} (id {index.pk}): {vectors.size:,} vectors in {vector_folder(index)} "
                f"({time.perf_counter() - started:.1f} s)"
            )
        for name in vector_folders_prune():
            self.stdout.write(f"deleted {name} (its version no longer exists)")
