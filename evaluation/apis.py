"""The evaluation API (DRF): list and read runs (public), queue a run on Celery (staff only)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny, BasePermission, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluation.data import QUERY_CHOICES
from evaluation.models import EvaluationRun
from evaluation.protocol_maths import EvaluationError
from evaluation.reports import run_headline
from evaluation.runs import RUN_KINDS
from evaluation.tasks import evaluation_queue
from indexing.jobs import QueueError
from indexing.lsh.hashing import FAMILIES
from sketchsite.api import MAX_ROW_ID, ErrorSerializer, JsonErrorsMixin


class EvaluationRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    extractor = serializers.CharField(source="extractor.name", allow_null=True, default=None)
    index = serializers.IntegerField(source="index_id", allow_null=True)
    created_at = serializers.DateTimeField()
    headline_map = serializers.SerializerMethodField()
    parameters = serializers.JSONField()

    def get_headline_map(self, run: EvaluationRun) -> float | None:
        return run_headline(run)


class EvaluationRunDetailSerializer(EvaluationRunSerializer):
    results = serializers.JSONField()
    per_class = serializers.JSONField()
    figures = serializers.SerializerMethodField()

    def get_figures(self, run: EvaluationRun) -> list[str]:
        from django.core.files.storage import default_storage

        return [default_storage.url(name) for name in run.figures]


class EvaluationListApi(JsonErrorsMixin, APIView):
    """GET /api/evaluations/: every run, newest first. POST: queue a run (staff only)."""

    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=[str(k) for k in RUN_KINDS])
        extractor = serializers.CharField(max_length=100)
        collections = serializers.ListField(child=serializers.CharField(max_length=100), min_length=1)
        distractors = serializers.ListField(child=serializers.CharField(max_length=100), default=list)
        index = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ROW_ID)
        queries = serializers.ChoiceField(choices=QUERY_CHOICES, default="all")
        probes = serializers.IntegerField(min_value=0, max_value=64, default=0)
        families = serializers.ListField(
            child=serializers.ChoiceField(choices=list(FAMILIES)), default=lambda: ["binary"]
        )
        grid = serializers.CharField(required=False, max_length=200, help_text='"L=3,4 K=5,6" or "3x6,7x2"')
        probe_list = serializers.ListField(
            child=serializers.IntegerField(min_value=0, max_value=64), default=lambda: [0]
        )
        w = serializers.FloatField(min_value=0.001, default=4.0)
        center = serializers.BooleanField(default=False)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            from evaluation.grid import parse_grid

            if attrs["kind"] == EvaluationRun.Kind.SWEEP:
                try:
                    parse_grid(attrs.get("grid", ""))
                except ValueError as exc:
                    raise serializers.ValidationError({"grid": str(exc)}) from exc
            return attrs

    class QueuedSerializer(serializers.Serializer):
        job = serializers.IntegerField(source="id")
        status = serializers.CharField()
        message = serializers.CharField()
        celery_task_id = serializers.CharField()

    def get_permissions(self) -> list[BasePermission]:
        return [IsAdminUser()] if self.request.method == "POST" else [AllowAny()]

    @extend_schema(operation_id="evaluation_list", responses={200: EvaluationRunSerializer(many=True)})
    def get(self, request: Request) -> Response:
        runs = EvaluationRun.objects.select_related("extractor").order_by("-created_at", "-id")
        return Response(EvaluationRunSerializer(runs, many=True).data)

    @extend_schema(
        operation_id="evaluation_queue",
        request=InputSerializer,
        responses={202: QueuedSerializer, 400: ErrorSerializer, 403: ErrorSerializer, 503: ErrorSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        parameters = dict(serializer.validated_data)
        kind = parameters.pop("kind")
        try:
            job = evaluation_queue(kind=kind, parameters=parameters)
        except EvaluationError as exc:
            raise exceptions.ValidationError(str(exc)) from exc
        except QueueError as exc:
            return Response({"error": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(self.QueuedSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class EvaluationDetailApi(JsonErrorsMixin, APIView):
    """GET /api/evaluations/<id>/: one run with its results, per-class rows and figure URLs."""

    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="evaluation_detail", responses={200: EvaluationRunDetailSerializer, 404: ErrorSerializer}
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = EvaluationRun.objects.select_related("extractor").filter(pk=run_id).first()
        if run is None:
            raise exceptions.NotFound(f"unknown evaluation run {run_id}")
        return Response(EvaluationRunDetailSerializer(run).data)
