from __future__ import annotations

from typing import Any

from django import forms

from evaluation.data import QUERY_CHOICES
from evaluation.grid import parse_grid, parse_int_list
from evaluation.models import EvaluationRun
from evaluation.runs import RUN_KINDS
from indexing.lsh.hashing import FAMILIES
from indexing.models import Collection, Extractor
from sketchsite.api import MAX_ROW_ID


class QueueRunForm(forms.Form):
    """The dashboard's small form to queue a run (staff only); the same fields as POST /api/evaluations/."""

    kind = forms.ChoiceField(choices=[(str(k), EvaluationRun.Kind(k).label) for k in RUN_KINDS])
    extractor = forms.ModelChoiceField(queryset=Extractor.objects.all(), to_field_name="name")
    collections = forms.ModelMultipleChoiceField(queryset=Collection.objects.all(), to_field_name="name")
    distractors = forms.ModelMultipleChoiceField(
        queryset=Collection.objects.all(), to_field_name="name", required=False
    )
    index = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_ROW_ID, help_text="stored index id (evaluate); empty: scan"
    )
    queries = forms.ChoiceField(choices=[(q, q) for q in QUERY_CHOICES], initial="all")
    families = forms.MultipleChoiceField(
        choices=[(name, spec.label) for name, spec in FAMILIES.items()], required=False, initial=["binary"]
    )
    grid = forms.CharField(required=False, initial="3x6,3x5,4x4,5x5,3x1,5x2", help_text="sweep: LxK pairs")
    probes = forms.CharField(required=False, initial="0", help_text="sweep: e.g. 0,1,2")
    center = forms.BooleanField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("kind") == EvaluationRun.Kind.SWEEP:
            try:
                parse_grid(data.get("grid") or "")
                parse_int_list(data.get("probes") or "0", name="probes")
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from exc
        return data

    def parameters(self) -> tuple[str, dict[str, Any]]:
        data = self.cleaned_data
        parameters: dict[str, Any] = {
            "extractor": data["extractor"].name,
            "collections": [c.name for c in data["collections"]],
            "distractors": [c.name for c in data["distractors"]],
            "queries": data["queries"],
        }
        if data.get("index"):
            parameters["index"] = data["index"]
        if data["kind"] == EvaluationRun.Kind.SWEEP:
            parameters.update(
                families=data["families"] or ["binary"],
                grid=data["grid"],
                probe_list=parse_int_list(data["probes"] or "0", name="probes"),
                center=data["center"],
            )
        return data["kind"], parameters
