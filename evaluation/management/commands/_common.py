"""Options and output shared by the evaluation commands (a leading underscore: not a command itself)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from django.core.management.base import CommandError, CommandParser
from tqdm import tqdm

from evaluation.data import evaluation_inputs_resolve
from evaluation.models import EvaluationRun
from evaluation.protocol_maths import EvaluationError
from evaluation.reports import markdown_table
from indexing.models import Collection, Extractor, LSHIndex

T = TypeVar("T")


def add_data_arguments(parser: CommandParser, *, required: bool = True) -> None:
    parser.add_argument("--collection", action="append", required=required, help="evaluated collection (repeatable)")
    parser.add_argument("--distractors", action="append", default=[], nargs="+", help="distractor collections")
    parser.add_argument("--extractor", required=required, help="extractor name, e.g. mobilenet_v1")


def resolve(options: dict[str, Any]) -> tuple[Extractor, list[Collection], list[Collection], LSHIndex | None]:
    distractors = [name for group in options.get("distractors") or [] for name in group]
    try:
        return evaluation_inputs_resolve(
            extractor=options["extractor"],
            collections=options["collection"],
            distractors=distractors,
            index=index_id(options.get("index")),
        )
    except EvaluationError as exc:
        raise CommandError(str(exc)) from exc


def index_id(value: str | int | None) -> int | None:
    """``--index``: an id, or a name meaning its active version (what build_index prints: name, version and id)."""
    if value is None or isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    found = LSHIndex.objects.filter(name=value, is_active=True).values_list("pk", flat=True).first()
    if found is None:
        active = ", ".join(
            f"{name} v{version} (id {pk})"
            for pk, name, version in LSHIndex.objects.filter(is_active=True)
            .order_by("name")
            .values_list("pk", "name", "version")
        )
        raise CommandError(f"no active index named {value!r} (active: {active or 'none'}; or give an id)")
    return found


def tqdm_progress(items: Iterable[T], description: str, total: int) -> Iterable[T]:
    return tqdm(items, desc=description, total=total, file=sys.stderr, leave=False)


def key_value_table(values: dict[str, Any], *, skip: Iterable[str] = ()) -> str:
    hidden = set(skip)
    rows = [{"metric": key, "value": value} for key, value in values.items() if key not in hidden]
    return markdown_table(rows, ["metric", "value"])


def with_x_scan(results: dict[str, Any]) -> dict[str, Any]:
    """An index's results with "x scan" (its mAP / the sequential scan's) right after mAP, as the README's tables."""
    scan = results.get("scan")
    if not isinstance(scan, dict) or not scan.get("mAP") or results.get("mAP") is None:
        return results
    out: dict[str, Any] = {}
    for key, value in results.items():
        out[key] = value
        if key == "mAP":
            out["x scan"] = value / scan["mAP"]
    return out


def run_footer(run: EvaluationRun) -> str:
    lines = [f"stored as evaluation run #{run.pk} ({run.kind})"]
    lines += [f"figure: {name}" for name in run.figures]
    lines += [f"{kind}: {name}" for kind, name in (run.results.get("files") or {}).items()]
    return "\n".join(lines)
