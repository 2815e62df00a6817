from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluation.management.commands._common import add_data_arguments, key_value_table, resolve, run_footer, with_x_scan
from evaluation.management.commands._crossdomain import add_cross_domain_arguments, handle_cross_domain
from evaluation.services import QUERY_CHOICES, EvaluationError, evaluation_run


class Command(BaseCommand):
    help = (
        "mAP, precision/recall@10, IE and latency of the sequential scan or a stored LSH index (paper 4.3, 5); "
        "with --cross-domain, sketch -> photo retrieval on a Sketchy-layout folder (mAP@all, P@100, instance "
        "recall@1/@10 on held-out and training classes) against the raw-photo and edge-map baselines."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_data_arguments(parser, required=False)
        method = parser.add_mutually_exclusive_group()
        method.add_argument("--index", help="a stored LSH index: its id, or its name (the active version)")
        method.add_argument("--scan", action="store_true", help="exact sequential scan")
        method.add_argument(
            "--cross-domain",
            action="store_true",
            help="sketch -> photo evaluation on --root (--extractor is then the frozen backbone, default mobilenet_v1)",
        )
        parser.add_argument("--queries", choices=QUERY_CHOICES, default="all", help="paper: one test sketch per class")
        parser.add_argument("--probes", type=int, default=0, help="multi-probe: extra buckets per table")
        add_cross_domain_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["cross_domain"]:
            if options["collection"] or options["distractors"]:
                raise CommandError("--cross-domain reads --root, not --collection / --distractors")
            handle_cross_domain(self, options)
            return
        if options["index"] is None and not options["scan"]:
            raise CommandError("choose one of --index ID, --scan or --cross-domain")
        missing = [flag for flag in ("collection", "extractor") if not options[flag]]
        if missing:
            raise CommandError(f"the following arguments are required: {', '.join('--' + m for m in missing)}")
        extractor, collections, distractors, index = resolve(options)
        try:
            run = evaluation_run(
                extractor=extractor,
                collections=collections,
                distractors=distractors,
                index=index,
                scan=options["scan"],
                queries=options["queries"],
                probes=options["probes"],
            )
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        title = "sequential scan" if index is None else f"LSH index {index} (id {index.pk})"
        self.stdout.write(f"{title} over {', '.join(c.name for c in collections)}")
        self.stdout.write(key_value_table(with_x_scan(run.results), skip=["scan"]))
        if "scan" in run.results:
            self.stdout.write("\nsequential scan (reference):")
            self.stdout.write(key_value_table(run.results["scan"]))
        self.stdout.write(run_footer(run))
