from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from indexing.services.importer import ImportPathError, collection_import


class Command(BaseCommand):
    help = (
        "Import a folder of images into a collection: the TU-Berlin layout png/<class>/<id>.png, "
        "class folders <class>/<file>, or a flat folder of photos. Re-running imports only new files."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="folder to import")
        parser.add_argument("--name", required=True, help="collection name (created when missing)")
        parser.add_argument("--kind", required=True, choices=["sketches", "photos", "mixed"])
        parser.add_argument(
            "--test-per-class",
            type=int,
            default=None,
            help="the last N files of each class (by numeric id) form the test split "
            "(default 20 for sketches, as the paper's 20 of 80; 0 for photos)",
        )
        parser.add_argument(
            "--no-labels",
            action="store_true",
            help="treat sub-folders as sources, not classes (distractor photos); implied for --kind photos "
            "unless --labels is given",
        )
        parser.add_argument("--labels", action="store_true", help="use sub-folders as class labels for photos")

    def handle(self, *args: Any, **options: Any) -> None:
        kind: str = options["kind"]
        test_per_class = options["test_per_class"]
        if test_per_class is None:
            test_per_class = 20 if kind == "sketches" else 0
        use_labels = not options["no_labels"] and (kind != "photos" or options["labels"])
        bar = tqdm(unit="img", desc=f"import {options['name']}", disable=options["verbosity"] == 0)
        try:
            report = collection_import(
                path=options["path"],
                name=options["name"],
                kind=kind,
                test_per_class=test_per_class,
                use_labels=use_labels,
                progress=bar.update,
                on_total=lambda total: setattr(bar, "total", total),
            )
        except (ImportPathError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        for relative, reason in report.skipped:
            self.stderr.write(f"skipped {relative}: {reason}")
        self.stdout.write(report.summary())
        if report.imported == 0 and report.duplicates == 0:
            raise CommandError(f"nothing was imported from {options['path']}")
