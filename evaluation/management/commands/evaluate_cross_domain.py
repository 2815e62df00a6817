from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluation.crossdomain import METHODS, markdown_table, run_cross_domain


class Command(BaseCommand):
    help = (
        "Sketch -> photo retrieval on a Sketchy-layout folder: raw photos vs edge maps vs a trained joint embedding, "
        "on unseen (held-out) and seen classes. Reads files directly (no database); caches backbone vectors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        default_root = Path(settings.BASE_DIR).parent / "shared" / "data" / "sketchy-125"
        parser.add_argument("--root", type=Path, default=default_root, help="folder with sketch/ and photo/")
        parser.add_argument("--extractor", default="mobilenet_v1", help="frozen backbone")
        parser.add_argument("--epochs", type=int, default=40, help="training epochs of each joint head")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--holdout", type=int, default=5, help="query sketches per seen class (last by name)")
        parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
        parser.add_argument(
            "--out", type=Path, default=Path(settings.BASE_DIR) / "var" / "bench" / "cross_domain.md", help="Markdown"
        )
        parser.add_argument("--no-cache", action="store_true", help="do not read or write cached backbone vectors")

    def handle(self, *args: Any, **options: Any) -> None:
        root: Path = options["root"]
        cache = None if options["no_cache"] else Path(settings.BASE_DIR) / "var" / "cache"
        try:
            result = run_cross_domain(
                root,
                backbone_name=options["extractor"],
                cache_dir=cache,
                holdout_per_class=options["holdout"],
                epochs=options["epochs"],
                seed=options["seed"],
                methods=options["methods"],
            )
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        table = markdown_table(result)
        self.stdout.write(table)
        setup = json.dumps(result.info, indent=1)
        self.stdout.write(setup)
        out: Path = options["out"]
        out.parent.mkdir(parents=True, exist_ok=True)
        losses = json.dumps(result.losses)
        out.write_text(
            "# Cross-domain search (sketch -> photo)\n\n"
            f"Command: `manage.py evaluate_cross_domain --root {root} --extractor {options['extractor']} "
            f"--epochs {options['epochs']} --seed {options['seed']}`\n\n{table}\nSetup:\n```\n{setup}\n```\n\n"
            f"Per-epoch training losses:\n```\n{losses}\n```\n"
        )
        self.stdout.write(f"written {out}")
