from __future__ import annotations

import json

from django.contrib import admin
from django.core.files.storage import default_storage
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from evaluation.models import EvaluationRun
from evaluation.reports import SWEEP_COLUMNS, format_value, run_headline


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    """Runs are written by the evaluation services only: the admin lists and shows them, read-only."""

    list_display = ["id", "kind", "extractor", "index", "created_at", "headline_map"]
    list_filter = ["kind", "extractor"]
    list_select_related = ["extractor", "index"]
    readonly_fields = [
        "kind",
        "extractor",
        "index",
        "created_at",
        "headline_map",
        "parameters_view",
        "results_view",
        "sweep_view",
        "figures_view",
        "per_class_view",
    ]
    exclude = ["parameters", "results", "per_class", "figures"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: EvaluationRun | None = None) -> bool:
        return False

    @admin.display(description="headline mAP")
    def headline_map(self, obj: EvaluationRun) -> str:
        value = run_headline(obj)
        return "-" if value is None else f"{value:.3f}"

    @admin.display(description="parameters")
    def parameters_view(self, obj: EvaluationRun) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(obj.parameters, indent=2))

    @admin.display(description="results")
    def results_view(self, obj: EvaluationRun) -> SafeString:
        shown = {key: value for key, value in (obj.results or {}).items() if key not in ("rows", "columns")}
        return format_html("<pre>{}</pre>", json.dumps(shown, indent=2))

    @admin.display(description="sweep table")
    def sweep_view(self, obj: EvaluationRun) -> SafeString | str:
        rows = (obj.results or {}).get("rows") or []
        if not rows:
            return "-"
        header = format_html_join("", "<th>{}</th>", ((column,) for column in SWEEP_COLUMNS))
        body = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (format_html_join("", "<td>{}</td>", ((format_value(row.get(c)),) for c in SWEEP_COLUMNS)),)
                for row in rows
            ),
        )
        return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, body)

    @admin.display(description="figures")
    def figures_view(self, obj: EvaluationRun) -> SafeString | str:
        if not obj.figures:
            return "-"
        return format_html_join(
            "",
            '<p><img src="{}" alt="{}" style="max-width: 48rem"></p>',
            ((default_storage.url(f), f) for f in obj.figures),
        )

    @admin.display(description="per class")
    def per_class_view(self, obj: EvaluationRun) -> SafeString | str:
        if not obj.per_class:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(obj.per_class, indent=2))
