from __future__ import annotations

from django.db import models


class EvaluationRun(models.Model):
    class Kind(models.TextChoices):
        EVALUATE = "evaluate"
        SWEEP = "sweep"
        CLASS_ANALYSIS = "class_analysis"
        COMPARE_MODELS = "compare_models"
        CROSS_DOMAIN = "cross_domain"
        RELEVANCE = "relevance"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    extractor = models.ForeignKey("indexing.Extractor", null=True, blank=True, on_delete=models.SET_NULL)
    index = models.ForeignKey("indexing.LSHIndex", null=True, blank=True, on_delete=models.SET_NULL)
    parameters = models.JSONField(default=dict)
    results = models.JSONField(default=dict)
    per_class = models.JSONField(default=list, blank=True)  # the paper's per-class JSON rows
    figures = models.JSONField(default=list, blank=True)  # media-relative paths of the PNGs
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"
