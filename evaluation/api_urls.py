from __future__ import annotations

from django.urls import path

from evaluation.apis import EvaluationDetailApi, EvaluationListApi

urlpatterns = [
    path("", EvaluationListApi.as_view(), name="evaluation-list"),
    path("<int:run_id>/", EvaluationDetailApi.as_view(), name="evaluation-detail"),
]
