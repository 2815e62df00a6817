"""The search API (DRF): thin views that validate, call one service or query, and serialise (STYLE.md G5).

Errors are JSON with a message, by sketchsite.api's handler (shared with the evaluation API).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Count, Q, QuerySet
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from indexing.models import Collection, Image, LSHIndex
from indexing.selectors import index_get_default, index_images_now, index_needs_rebuild
from indexing.services.images import InvalidImageError, image_create
from indexing.services.search import MAX_TOP_K, SearchResult, sketch_search
from search.uploads import query_max_bytes, too_large_message
from sketchsite.api import MAX_ROW_ID, ErrorSerializer, JsonErrorsMixin, PayloadTooLarge, ServiceUnavailable

DEFAULT_TOP_K = 24
MAX_PROBES = 16

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,")


@extend_schema_field(
    {
        "type": "string",
        "description": "the query image: a `data:image/png;base64,...` URL in JSON, or a file in multipart",
    }
)
class QueryImageField(serializers.Field):
    """An uploaded file or a base64 data URL, decoded to bytes; over the size limit raises 413."""

    default_error_messages = {
        "empty": "the image is empty (0 bytes)",
        "invalid_type": "image must be a file upload or a data URL (data:image/png;base64,...)",
        "malformed": "malformed data URL: expected data:image/<type>;base64,<data>",
        "not_image": "the data URL is not an image (got {mime})",
        "bad_base64": "the data URL's base64 payload is invalid",
    }

    def to_internal_value(self, data: Any) -> bytes:
        limit = query_max_bytes()
        if isinstance(data, UploadedFile):
            if data.size is not None and data.size > limit:
                raise PayloadTooLarge(too_large_message(f"{data.size} bytes", limit))
            content = data.read()
        elif isinstance(data, str):
            content = self._decode_data_url(data.strip(), limit)
        else:
            self.fail("invalid_type")
        if not content:
            self.fail("empty")
        if len(content) > limit:
            raise PayloadTooLarge(too_large_message(f"{len(content)} bytes", limit))
        return content

    def _decode_data_url(self, text: str, limit: int) -> bytes:
        if not text:
            self.fail("empty")
        match = _DATA_URL.match(text)
        if match is None or not match.group("b64"):
            self.fail("malformed")
        mime = (match.group("mime") or "").lower()
        if not mime.startswith("image/"):
            self.fail("not_image", mime=mime or "no type")
        payload = text[match.end() :]
        if len(payload) * 3 // 4 > limit + 3:  # refuse before decoding: base64 is 4 characters per 3 bytes
            raise PayloadTooLarge(too_large_message(f"about {len(payload) * 3 // 4} bytes", limit))
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self.fail("bad_base64")
        raise AssertionError("unreachable")  # self.fail always raises

    def to_representation(self, value: Any) -> Any:
        return None  # write-only: the image is never echoed back


@extend_schema_field({"type": "string", "format": "binary", "description": "the query image file"})
class UploadField(serializers.FileField):
    """Only documents the multipart form's file in the schema; QueryImageField parses it."""


class FiniteFloatField(serializers.FloatField):
    """A float that is null when infinite or NaN (JSON has no inf; IE is infinite when nothing was scored)."""

    def to_representation(self, value: Any) -> Any:
        number = float(value)
        return number if math.isfinite(number) else None


@extend_schema_serializer(component_name="IndexSummary")
class IndexSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    family = serializers.CharField()
    num_tables = serializers.IntegerField()
    hashes_per_table = serializers.IntegerField()
    probes = serializers.IntegerField(help_text="extra buckets per table a search probes when it names none")
    extractor = serializers.CharField(source="extractor.name")


class SketchSearchApi(JsonErrorsMixin, APIView):
    """POST /api/search/: the most similar images to a sketch (file or data URL) or to a stored image."""

    permission_classes = [AllowAny]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "search"  # rate: settings SEARCH_THROTTLE_RATE, per client address

    @extend_schema_serializer(component_name="SearchRequest")
    class InputSerializer(serializers.Serializer):
        image = QueryImageField(required=False)
        image_id = serializers.IntegerField(
            required=False, min_value=1, max_value=MAX_ROW_ID, help_text="query by example"
        )
        k = serializers.IntegerField(min_value=1, max_value=MAX_TOP_K, default=DEFAULT_TOP_K)
        index = serializers.IntegerField(
            required=False, min_value=1, max_value=MAX_ROW_ID, help_text="default: the active index"
        )
        probes = serializers.IntegerField(
            required=False, min_value=0, max_value=MAX_PROBES, help_text="default: the index's tuned probes"
        )
        label = serializers.CharField(required=False, allow_blank=True, max_length=100)  # type: ignore[assignment]
        scan = serializers.BooleanField(required=False, default=False, help_text="exact scan, no LSH")
        domain = serializers.ChoiceField(
            choices=["sketch", "photo", "both"],
            required=False,
            help_text="only hits from sketch collections, photo collections, or both (default)",
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("image" in attrs) == ("image_id" in attrs):
                raise serializers.ValidationError("give exactly one of image (a sketch) and image_id")
            return attrs

    @extend_schema_serializer(component_name="SearchRequestMultipart")
    class MultipartInputSerializer(InputSerializer):
        image = UploadField(required=False)  # type: ignore[assignment]

    @extend_schema_serializer(component_name="SearchResponse")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="SearchHit")
        class HitSerializer(serializers.Serializer):
            image_id = serializers.IntegerField()
            url = serializers.CharField()
            label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
            score = serializers.FloatField(
                help_text=(
                    "cosine similarity of the index's vectors; over the served sketch head, (1 - w) x that cosine + "
                    "w x the cosine of the images' backbone vectors (SKETCHSEARCH_LOOK_WEIGHT, 0.02)"
                )
            )
            collection = serializers.CharField()
            split = serializers.CharField()

        @extend_schema_serializer(component_name="SearchStats")
        class StatsSerializer(serializers.Serializer):
            candidates = serializers.IntegerField(help_text="distinct candidates re-ranked (distance computations)")
            candidates_with_repeats = serializers.IntegerField(help_text="the paper's count: once per table")
            collection_size = serializers.IntegerField()
            ie = FiniteFloatField(allow_null=True, help_text="collection_size / candidates; null when 0")
            ie_paper = FiniteFloatField(allow_null=True, help_text="collection_size / candidates_with_repeats")
            probes = serializers.IntegerField()
            scan = serializers.BooleanField()
            timings_ms = serializers.SerializerMethodField()

            @extend_schema_field(
                serializers.DictField(
                    child=serializers.FloatField(),
                    help_text="ms per stage (load, decode, preprocess, embed, hash, sql, rerank, look, fetch), total",
                )
            )
            def get_timings_ms(self, result: SearchResult) -> dict[str, float]:
                return {**result.timings_ms, "total": round(sum(result.timings_ms.values()), 3)}

        @extend_schema_serializer(component_name="ClassPrediction")
        class PredictionSerializer(serializers.Serializer):
            label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
            probability = serializers.FloatField(source="score")

        results = HitSerializer(source="hits", many=True)
        stats = StatsSerializer(source="*")
        index = IndexSummarySerializer()
        predictions = PredictionSerializer(
            many=True, help_text="the index extractor's classifier: top classes of the sketch (empty without one)"
        )

    @extend_schema(
        operation_id="sketch_search",
        summary="Search with a sketch or a stored image",
        request={
            "application/json": InputSerializer,
            "multipart/form-data": MultipartInputSerializer,
        },
        responses={
            200: OutputSerializer,
            400: ErrorSerializer,
            413: ErrorSerializer,
            503: ErrorSerializer,
        },
        examples=[
            OpenApiExample(
                "Sketch as a data URL",
                value={"image": "data:image/png;base64,iVBORw0KGgo...", "k": 24, "probes": 0},
                request_only=True,
                media_type="application/json",
            ),
            OpenApiExample(
                "Query by example", value={"image_id": 42, "k": 24}, request_only=True, media_type="application/json"
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        index: LSHIndex | int | None = data.get("index")
        if index is None:
            # No active index is the server's state, not the client's mistake: 503, not 400.
            index = index_get_default()
            if index is None:
                raise ServiceUnavailable("no active index yet: build one (`manage.py build_index`; make run does it)")
        result = sketch_search(
            image=data.get("image"),
            image_id=data.get("image_id"),
            index=index,
            top_k=data["k"],
            probes=data.get("probes"),
            label=data.get("label") or None,
            scan=data["scan"],
            domain=data.get("domain"),
        )
        return Response(self.OutputSerializer(result).data)


# Read-only listings. Their queries are small enough to live here; they belong in indexing/selectors.py
# (STYLE.md G4) once that module exists.
def _index_list() -> QuerySet[LSHIndex]:
    return LSHIndex.objects.select_related("extractor").prefetch_related("collections").order_by("name", "-version")


def _collection_list() -> QuerySet[Collection]:
    return Collection.objects.annotate(
        image_count=Count("images", distinct=True),
        class_count=Count("images__label", distinct=True, filter=~Q(images__label="")),
    ).order_by("name")


class IndexListApi(JsonErrorsMixin, APIView):
    """GET /api/indexes/: every index version, the active ones flagged, and the one a search without an index uses."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="Index")
    class OutputSerializer(IndexSummarySerializer):
        w = serializers.FloatField(source="params.w", default=4.0)  # the p-stable slot width (LSHIndex.params)
        status = serializers.CharField()
        is_active = serializers.BooleanField()
        is_default = serializers.SerializerMethodField()
        item_count = serializers.IntegerField(help_text="images when it was built (its parameters were chosen for)")
        images_now = serializers.SerializerMethodField()
        needs_rebuild = serializers.SerializerMethodField()
        collections = serializers.SerializerMethodField()

        @extend_schema_field(serializers.IntegerField(help_text="built ones plus those added since (upper bound)"))
        def get_images_now(self, index: LSHIndex) -> int:
            return index_images_now(index)

        @extend_schema_field(
            serializers.BooleanField(
                help_text="it holds SKETCHSEARCH_REBUILD_GROWTH times the images its parameters were chosen for: "
                "run `manage.py reindex --name NAME` (or the admin's rebuild action)"
            )
        )
        def get_needs_rebuild(self, index: LSHIndex) -> bool:
            return index_needs_rebuild(index, growth=settings.SKETCHSEARCH_REBUILD_GROWTH)

        @extend_schema_field(serializers.BooleanField(help_text="searched when a search names no index"))
        def get_is_default(self, index: LSHIndex) -> bool:
            return index.pk == self.context.get("default_id")

        @extend_schema_field(serializers.ListField(child=serializers.CharField(), help_text="collection names"))
        def get_collections(self, index: LSHIndex) -> list[str]:
            return [c.name for c in index.collections.all()]  # prefetched by _index_list()

    @extend_schema(operation_id="index_list", responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        default = index_get_default()
        context = {"default_id": default.pk if default is not None else None}
        return Response(self.OutputSerializer(_index_list(), many=True, context=context).data)


class CollectionListApi(JsonErrorsMixin, APIView):
    """GET /api/collections/: the collections with their image and class counts."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="Collection")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        kind = serializers.CharField()
        image_count = serializers.IntegerField()
        class_count = serializers.IntegerField()

    @extend_schema(operation_id="collection_list", responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(_collection_list(), many=True).data)


class ImageCreateApi(JsonErrorsMixin, APIView):
    """POST /api/images/ (staff): add one image to a collection; it is searchable as soon as this answers."""

    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="ImageCreateInput")
    class InputSerializer(serializers.Serializer):
        file = UploadField(help_text="the image file")
        collection = serializers.CharField(help_text="the collection's name")
        label = serializers.CharField(  # type: ignore[assignment]
            required=False, allow_blank=True, default="", max_length=100
        )
        split = serializers.ChoiceField(choices=Image.Split.choices, default=Image.Split.TRAIN)

    @extend_schema_serializer(component_name="ImageCreated")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(source="image.pk")
        url = serializers.CharField(source="image.file.url")
        label = serializers.CharField(source="image.label")  # type: ignore[assignment]
        split = serializers.CharField(source="image.split")
        collection = serializers.CharField(source="image.collection.name")
        created = serializers.BooleanField(help_text="false: the collection already held these bytes")
        embedded_by = serializers.ListField(
            child=serializers.CharField(), help_text="extractors of the active indexes it was added to"
        )

    @extend_schema(
        operation_id="image_create",
        request={"multipart/form-data": InputSerializer},
        responses={201: OutputSerializer, 200: OutputSerializer, 400: ErrorSerializer, 403: ErrorSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        collection = Collection.objects.filter(name=data["collection"]).first()
        if collection is None:
            raise exceptions.ValidationError({"collection": [f"unknown collection {data['collection']!r}"]})
        upload: UploadedFile = data["file"]
        try:
            created = image_create(
                collection=collection,
                data=upload.read(),
                name=upload.name or "",
                label=data["label"],
                split=data["split"],
            )
        except InvalidImageError as error:
            raise exceptions.ValidationError({"file": [str(error)]}) from error
        code = status.HTTP_201_CREATED if created.created else status.HTTP_200_OK
        return Response(self.OutputSerializer(created).data, status=code)


class ImageDetailApi(JsonErrorsMixin, APIView):
    """GET /api/images/<id>/: one stored image."""

    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="Image")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        url = serializers.CharField(source="file.url")
        label = serializers.CharField()  # type: ignore[assignment]
        split = serializers.CharField()
        collection = serializers.CharField(source="collection.name")
        width = serializers.IntegerField()
        height = serializers.IntegerField()
        source = serializers.CharField()  # type: ignore[assignment]

    @extend_schema(operation_id="image_detail", responses={200: OutputSerializer, 404: ErrorSerializer})
    def get(self, request: Request, image_id: int) -> Response:
        image = Image.objects.select_related("collection").filter(pk=image_id).first()
        if image is None:
            raise exceptions.NotFound(f"unknown image {image_id}")
        return Response(self.OutputSerializer(image).data)


__all__ = [
    "CollectionListApi",
    "ImageCreateApi",
    "ImageDetailApi",
    "IndexListApi",
    "SketchSearchApi",
]
