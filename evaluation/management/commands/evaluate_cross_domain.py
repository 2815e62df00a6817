from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from evaluation.management.commands._crossdomain import (
    DEFAULT_BACKBONE,
    add_cross_domain_arguments,
    handle_cross_domain,
)


class Command(BaseCommand):
    help = (
        "Sketch -> photo retrieval on a Sketchy-layout folder: raw photos vs edge maps vs a trained joint embedding, "
        "on unseen (held-out) and seen classes. Same as `evaluate --cross-domain`. Reads files directly (no "
        "database needed unless --save-extractor); caches backbone vectors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--extractor", default=DEFAULT_BACKBONE, help="frozen backbone")
        add_cross_domain_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        handle_cross_domain(self, options)
