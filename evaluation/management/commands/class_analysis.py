from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluation.management.commands._common import add_data_arguments, key_value_table, resolve, run_footer
from evaluation.protocol_maths import EvaluationError
from evaluation.reports import markdown_table
from evaluation.runs import class_analysis

CLASS_COLUMNS = ["class", "queries", "mAP", "min AP", "max AP", "max-min range", "std", "best query id",
                 "worst query id"]  # fmt: skip


class Command(BaseCommand):
    help = "The paper's Algorithm 1: per-class mAP, min/max AP, range, std, best and worst query sketch."

    def add_arguments(self, parser: CommandParser) -> None:
        add_data_arguments(parser)
        parser.add_argument("--index", type=int, help="evaluate a stored LSH index instead of the scan")
        parser.add_argument("--all-sketches", action="store_true", help="query with every sketch, not only test")
        parser.add_argument("--json", type=Path, help="also write the per-class rows (the paper's JSON form) here")

    def handle(self, *args: Any, **options: Any) -> None:
        extractor, collections, distractors, index = resolve(options)
        try:
            run = class_analysis(
                extractor=extractor,
                collections=collections,
                distractors=distractors,
                index=index,
                query_split=None if options["all_sketches"] else "test",
            )
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        columns = CLASS_COLUMNS + (["recall"] if any("recall" in row for row in run.per_class) else [])
        rows = sorted(run.per_class, key=lambda row: row["mAP"], reverse=True)
        self.stdout.write(markdown_table(rows, columns))
        self.stdout.write("")
        self.stdout.write(key_value_table(run.results))
        if options["json"]:
            options["json"].write_text(json.dumps(run.per_class, indent=2))
            self.stdout.write(f"per-class JSON: {options['json']}")
        self.stdout.write(run_footer(run))
