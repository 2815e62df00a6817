from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from indexing.lsh.autotune import DEFAULT_TARGET_RECALL
from indexing.lsh.hashing import FAMILIES
from indexing.models import Collection, Extractor
from indexing.services.index import DEFAULT_CENTER, DEFAULT_FAMILY, index_build, index_stats


class Command(BaseCommand):
    help = "Hash an extractor's features into a new LSH index version and make it active (one transaction)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--extractor", required=True)
        parser.add_argument(
            "--collection", action="append", help="collections to index (repeatable; default: all with features)"
        )
        parser.add_argument(
            "--family",
            choices=list(FAMILIES),
            default=DEFAULT_FAMILY,
            help=", ".join(f"{name}: {spec.label}" for name, spec in FAMILIES.items()) + " (default %(default)s)",
        )
        parser.add_argument(
            "--L", "--tables", dest="num_tables", type=int, help="number of tables (default: tuned with K)"
        )
        parser.add_argument(
            "--K", "--hashes", dest="hashes_per_table", type=int, help="hashes per table (default: tuned with L)"
        )
        parser.add_argument(
            "--probes", type=int, help="extra buckets per table a search probes by default (default: tuned)"
        )
        parser.add_argument(
            "--target-recall",
            type=float,
            default=DEFAULT_TARGET_RECALL,
            help="recall@10 the tuning aims for on a sample of the collection's own vectors (default %(default)s)",
        )
        parser.add_argument("--w", type=float, help="p-stable slot width (real family; default: the family's, 4.0)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--center",
            action=argparse.BooleanOptionalAction,
            default=DEFAULT_CENTER,
            help="subtract the collection mean before hashing (default: on)",
        )
        parser.add_argument("--name", default="default", help="index name; versions of a name replace each other")
        parser.add_argument("--no-activate", action="store_true", help="build but leave the current version active")

    def handle(self, *args: Any, **options: Any) -> None:
        extractor = Extractor.objects.filter(name=options["extractor"]).first()
        if extractor is None:
            raise CommandError(f"no extractor named {options['extractor']!r}; run extract_features first")
        if options["collection"]:
            collections = list(Collection.objects.filter(name__in=options["collection"]))
            missing = set(options["collection"]) - {c.name for c in collections}
            if missing:
                raise CommandError(f"no collection named {', '.join(sorted(missing))}")
        else:
            collections = list(Collection.objects.filter(images__features__extractor=extractor).distinct())
        try:
            index = index_build(
                extractor=extractor,
                collections=collections,
                family=options["family"],
                num_tables=options["num_tables"],
                hashes_per_table=options["hashes_per_table"],
                probes=options["probes"],
                target_recall=options["target_recall"],
                params={} if options["w"] is None else {"w": options["w"]},
                seed=options["seed"],
                center=options["center"],
                name=options["name"],
                activate=not options["no_activate"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        stats = index_stats(index=index)
        rows = index.item_count * index.num_tables
        self.stdout.write(
            f"built {index.name} v{index.version} (id {index.pk}; {index.family} L={index.num_tables} "
            f"K={index.hashes_per_table}) over {index.item_count} images ({rows:,} bucket rows) "
            f"in {index.build_seconds:.2f} s (loading the features included); "
            f"{stats.num_buckets} buckets, {stats.avg_items_per_bucket:.1f} ± {stats.std_items_per_bucket:.1f} items "
            f"per bucket, purity {stats.avg_purity:.2f} ± {stats.std_purity:.2f}"
            + ("; active" if index.is_active else "; not active")
        )
        if index.tuning:
            chosen, tuning = index.tuning["chosen"], index.tuning
            verdict = "reached" if index.tuning["met"] else "NOT reached (best found)"
            self.stdout.write(
                f"tuned on {tuning['sample']} of its own vectors: L={index.num_tables} K={index.hashes_per_table} "
                f"probes={index.probes}, recall@{tuning['top_k']} {chosen['recall']:.3f} "
                f"(target {tuning['target_recall']} {verdict}), {chosen['candidates']:.0f} candidates per query "
                f"(IE {tuning['ie']})"
            )
