from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluation.data import QUERY_CHOICES, collections_resolve
from evaluation.management.commands._common import add_data_arguments, key_value_table, resolve, run_footer, with_x_scan
from evaluation.management.commands._crossdomain import add_cross_domain_arguments, handle_cross_domain
from evaluation.protocol_maths import EvaluationError
from evaluation.runs import evaluation_run


def _split_queries(values: list[str]) -> tuple[str, list[str]]:
    """--queries values: a selection (all / paper, at most one) and query collection names."""
    selections = [v for v in values if v in QUERY_CHOICES]
    if len(selections) > 1:
        raise CommandError(f"--queries takes one of {', '.join(QUERY_CHOICES)}, got {', '.join(selections)}")
    return (selections[0] if selections else "all"), [v for v in values if v not in QUERY_CHOICES]


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
        parser.add_argument(
            "--queries",
            action="append",
            help="all (default): every test sketch; paper: one per class; or a collection whose labelled images are "
            "the queries (repeatable), searched against the whole --gallery",
        )
        parser.add_argument(
            "--gallery", action="append", help="collections searched by --queries COLLECTION (repeatable)"
        )
        parser.add_argument(
            "--probes", type=int, help="multi-probe: extra buckets per table (default: the index's tuned probes)"
        )
        add_cross_domain_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["cross_domain"]:
            if options["collection"] or options["distractors"]:
                raise CommandError("--cross-domain reads --root, not --collection / --distractors")
            handle_cross_domain(self, options)
            return
        if options["index"] is None and not options["scan"]:
            raise CommandError("choose one of --index ID, --scan or --cross-domain")
        selection, query_names = _split_queries(options["queries"] or [])
        if query_names or options["gallery"]:
            if not query_names or not options["gallery"]:
                raise CommandError("--queries COLLECTION and --gallery COLLECTION go together")
            if options["collection"] or options["distractors"]:
                raise CommandError("--gallery replaces --collection and --distractors")
            options["collection"] = options["gallery"]
        missing = [flag for flag in ("collection", "extractor") if not options[flag]]
        if missing:
            raise CommandError(f"the following arguments are required: {', '.join('--' + m for m in missing)}")
        extractor, collections, distractors, index = resolve(options)
        try:
            query_collections = collections_resolve(query_names)
            run = evaluation_run(
                extractor=extractor,
                collections=collections,
                distractors=distractors,
                index=index,
                scan=options["scan"],
                queries=selection,
                probes=options["probes"],
                query_collections=query_collections,
            )
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        title = "sequential scan" if index is None else f"LSH index {index} (id {index.pk})"
        if query_names:
            title = f"queries from {', '.join(query_names)}: {title}"
        self.stdout.write(f"{title} over {', '.join(c.name for c in collections)}")
        self.stdout.write(key_value_table(with_x_scan(run.results), skip=["scan"]))
        if "scan" in run.results:
            self.stdout.write("\nsequential scan (reference):")
            self.stdout.write(key_value_table(run.results["scan"]))
        self.stdout.write(run_footer(run))
