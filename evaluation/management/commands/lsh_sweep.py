from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluation.data import QUERY_CHOICES
from evaluation.grid import parse_grid, parse_int_list
from evaluation.management.commands._common import add_data_arguments, resolve, run_footer, tqdm_progress
from evaluation.protocol_maths import EvaluationError
from evaluation.reports import SWEEP_COLUMNS, markdown_table
from evaluation.runs import lsh_sweep
from indexing.lsh.hashing import FAMILIES


class Command(BaseCommand):
    help = "The paper's section-5 tables: mAP, IE and bucket statistics for every (L, K) of a grid."

    def add_arguments(self, parser: CommandParser) -> None:
        add_data_arguments(parser)
        parser.add_argument(
            "--family", action="append", choices=list(FAMILIES), required=True, help=" and/or ".join(FAMILIES)
        )
        parser.add_argument("--grid", required=True, help='"L=3,4,5 K=1,2" (cartesian product) or LxK pairs "3x6,7x2"')
        parser.add_argument("--probes", default="0", help="comma-separated multi-probe settings, e.g. 0,1,2")
        parser.add_argument("--w", type=float, default=4.0, help="p-stable slot width (real family)")
        parser.add_argument("--center", action="store_true", help="subtract the gallery mean before hashing")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--queries", choices=QUERY_CHOICES, default="all")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            grid = parse_grid(options["grid"])
            probes = parse_int_list(options["probes"], name="probes")
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        extractor, collections, distractors, _ = resolve(options)
        try:
            run = lsh_sweep(
                extractor=extractor,
                collections=collections,
                distractors=distractors,
                family=options["family"],
                grid=grid,
                probes=probes,
                w=options["w"],
                center=options["center"],
                seed=options["seed"],
                queries=options["queries"],
                progress=tqdm_progress,
            )
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        results = run.results
        self.stdout.write(
            f"LSH sweep over {', '.join(c.name for c in collections)}: gallery {results['gallery size']} "
            f"({results['distractors']} distractors), {results['queries']} queries, "
            f"centre {'on' if options['center'] else 'off'}, w={options['w']}, {results['seconds']:.1f} s"
        )
        scan = results["scan"]
        columns, rows = list(SWEEP_COLUMNS), results["rows"]
        if scan["mAP"]:  # "x scan" as in the README's tables: the row's mAP / the sequential scan's
            columns.insert(columns.index("mAP") + 1, "x scan")
            rows = [{**row, "x scan": row["mAP"] / scan["mAP"]} for row in rows]
        self.stdout.write(markdown_table(rows, columns))
        self.stdout.write(
            f"\nsequential scan: mAP {scan['mAP']:.3f}, p@10 {scan['p@10']:.3f}, "
            f"p50 latency {scan['p50 latency ms']:.2f} ms\n"
        )
        self.stdout.write(run_footer(run))
