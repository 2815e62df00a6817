from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Test mAP (sequential scan: test queries vs the train split) of every trained extractor and the untrained "
        "bases against their parameter counts, as a table and a PNG like the paper's Figure 4."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--collection", default=None, help="only this collection (default: every one trained on)")

    def handle(self, *args: Any, **options: Any) -> None:
        from indexing.services.comparison import comparison_plot_save, extractor_comparison
        from indexing.services.training import TrainingError

        try:
            rows = extractor_comparison(collection_name=options["collection"])
        except TrainingError as exc:
            raise CommandError(str(exc)) from exc
        if not rows:
            raise CommandError("no trained extractor and no base with vectors to compare: run train_extractor first")
        header = ("collection", "extractor", "head", "strategy", "params", "test mAP", "test acc", "mAP from")
        lines = [
            (
                r.collection,
                r.extractor,
                r.head or "-",
                r.strategy,
                f"{r.params:,}",
                f"{r.test_map:.4f}",
                f"{r.test_accuracy:.3f}" if r.test_accuracy is not None else "-",
                "stored vectors" if r.source == "features" else "training run",
            )
            for r in sorted(rows, key=lambda r: (r.collection, r.params))
        ]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        self.stdout.write(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        self.stdout.write("-+-".join("-" * w for w in widths))
        for line in lines:
            self.stdout.write(" | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
        path = comparison_plot_save(rows, collection_name=options["collection"])
        self.stdout.write(f"figure: {path} (under MEDIA_ROOT)")
