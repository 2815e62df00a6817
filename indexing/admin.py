from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from indexing import jobs, tasks
from indexing.models import Collection, Extractor, Feature, HashTable, Image, Job, LSHIndex
from indexing.selectors import index_get_active, index_images_now, index_needs_rebuild
from indexing.services.images import image_create
from indexing.services.importer import check_image


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "image_count", "train_count", "test_count", "class_count", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "class_counts"]
    actions = ["queue_extraction", "queue_index_build"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Collection]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_images=Count("images"),
                n_train=Count("images", filter=Q(images__split=Image.Split.TRAIN)),
                n_test=Count("images", filter=Q(images__split=Image.Split.TEST)),
                n_classes=Count("images__label", distinct=True),
            )
        )

    @admin.display(description="images", ordering="n_images")
    def image_count(self, obj: Collection) -> int:
        return obj.n_images  # type: ignore[attr-defined]

    @admin.display(description="train", ordering="n_train")
    def train_count(self, obj: Collection) -> int:
        return obj.n_train  # type: ignore[attr-defined]

    @admin.display(description="test", ordering="n_test")
    def test_count(self, obj: Collection) -> int:
        return obj.n_test  # type: ignore[attr-defined]

    @admin.display(description="classes", ordering="n_classes")
    def class_count(self, obj: Collection) -> int:
        return obj.n_classes  # type: ignore[attr-defined]

    @admin.display(description="images per class and split")
    def class_counts(self, obj: Collection) -> SafeString:
        rows = (
            Image.objects.filter(collection=obj)
            .values("label")
            .annotate(
                train=Count("id", filter=Q(split=Image.Split.TRAIN)),
                test=Count("id", filter=Q(split=Image.Split.TEST)),
            )
            .order_by("label")
        )
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((r["label"] or "(none)", r["train"], r["test"]) for r in rows),
        )
        return format_html("<table><tr><th>class</th><th>train</th><th>test</th></tr>{}</table>", body)

    @admin.action(description="Queue feature extraction for the selected collections")
    def queue_extraction(self, request: HttpRequest, queryset: QuerySet[Collection]) -> None:
        self._queue(request, queryset, tasks.collection_extract_features_queue)

    @admin.action(description="Queue an index build over the selected collections")
    def queue_index_build(self, request: HttpRequest, queryset: QuerySet[Collection]) -> None:
        self._queue(request, queryset, tasks.index_build_queue)

    def _queue(self, request: HttpRequest, queryset: QuerySet[Collection], queue: jobs.QueueFn) -> None:
        active = index_get_active()
        extractor = active.extractor if active else Extractor.objects.order_by("-created_at").first()
        if extractor is None:
            self.message_user(request, "No extractor yet: run manage.py extract_features once.", level=messages.ERROR)
            return
        try:
            job = queue(collection_ids=list(queryset.values_list("id", flat=True)), extractor_id=extractor.pk)
        except jobs.QueueError as exc:
            self.message_user(request, str(exc), level=messages.ERROR)
            return
        self.message_user(request, f"Queued {job}; its progress shows under Jobs.", level=messages.SUCCESS)


class ImageAdminForm(forms.ModelForm):
    """The admin's image form: a new image's file is checked like an upload (a clear error, nothing stored)."""

    class Meta:
        model = Image
        fields = ["collection", "file", "label", "split", "source", "original_name"]

    def clean_file(self) -> Any:
        upload = self.cleaned_data.get("file")
        if self.instance.pk is None and upload is not None:
            checked = check_image(upload.read())
            upload.seek(0)
            if isinstance(checked, str):
                raise forms.ValidationError(f"{upload.name}: {checked}")
        return upload


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    form = ImageAdminForm

    list_display = ["id", "thumbnail", "collection", "label", "split", "source", "width", "height"]
    list_filter = ["collection", "split", "source", "label"]
    search_fields = ["label", "original_name", "sha256"]
    readonly_fields = ["preview", "sha256", "width", "height", "created_at"]
    list_select_related = ["collection"]
    list_per_page = 60

    @admin.display(description="")
    def thumbnail(self, obj: Image) -> SafeString:
        return format_html('<img src="{}" alt="{}" width="64" height="64" loading="lazy">', obj.file.url, obj.label)

    @admin.display(description="image")
    def preview(self, obj: Image) -> SafeString:
        return format_html('<img src="{}" alt="{}" style="max-width:300px">', obj.file.url, obj.label)

    def save_model(self, request: HttpRequest, obj: Image, form: forms.ModelForm, change: bool) -> None:
        """A new image goes through image_create: stored, embedded and hashed into the active indexes at once."""
        if change:
            super().save_model(request, obj, form, change)
            return
        upload = form.cleaned_data["file"]
        created = image_create(
            collection=obj.collection, data=upload.read(), name=upload.name or "", label=obj.label, split=obj.split
        )
        obj.pk = created.image.pk
        obj.refresh_from_db()
        if not created.created:
            self.message_user(request, f"The collection already held this file: {obj}.", level=messages.WARNING)
        elif created.embedded_by:
            names = ", ".join(created.embedded_by)
            self.message_user(request, f"Embedded by {names} and added to the active index.", level=messages.SUCCESS)


@admin.register(Extractor)
class ExtractorAdmin(admin.ModelAdmin):
    list_display = ["name", "backbone", "head", "weights", "input_size", "output_dim", "param_count", "feature_count"]
    readonly_fields = ["created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Extractor]:
        return super().get_queryset(request).annotate(n_features=Count("features"))

    @admin.display(description="features", ordering="n_features")
    def feature_count(self, obj: Extractor) -> int:
        return obj.n_features  # type: ignore[attr-defined]


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    list_display = ["id", "image", "extractor", "created_at"]
    list_filter = ["extractor"]
    raw_id_fields = ["image"]
    list_select_related = ["image__collection", "extractor"]


class HashTableInline(admin.TabularInline):
    model = HashTable
    fields = ["number"]
    readonly_fields = ["number"]
    extra = 0
    can_delete = False


@admin.register(LSHIndex)
class LSHIndexAdmin(admin.ModelAdmin):
    list_display = [
        "name", "version", "is_active", "status", "extractor", "family",
        "num_tables", "hashes_per_table", "params", "item_count", "images_now", "rebuild_hint", "build_seconds",
        "built_at",
    ]  # fmt: skip
    list_filter = ["status", "family", "is_active", "extractor"]
    readonly_fields = ["status", "is_active", "item_count", "build_seconds", "built_at", "created_at"]
    inlines = [HashTableInline]
    actions = ["queue_rebuild"]

    @admin.display(description="images now")
    def images_now(self, obj: LSHIndex) -> int:
        return index_images_now(obj)

    @admin.display(description="rebuild?")
    def rebuild_hint(self, obj: LSHIndex) -> str:
        if obj.is_active and index_needs_rebuild(obj, growth=settings.SKETCHSEARCH_REBUILD_GROWTH):
            return f"yes: grown {index_images_now(obj) / max(obj.item_count, 1):.1f}x since its parameters were chosen"
        return "-"

    @admin.action(description="Rebuild the selected indexes (re-tune L, K and probes on the collection as it is now)")
    def queue_rebuild(self, request: HttpRequest, queryset: QuerySet[LSHIndex]) -> None:
        for name in sorted(set(queryset.filter(is_active=True).values_list("name", flat=True))):
            try:
                job = tasks.index_reindex_queue(name=name)
            except jobs.QueueError as exc:
                self.message_user(request, str(exc), level=messages.ERROR)
                return
            self.message_user(
                request, f"Queued {job} for {name}; its progress shows under Jobs.", level=messages.SUCCESS
            )


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "progress", "message", "created_at", "updated_at"]
    list_filter = ["kind", "status"]
    readonly_fields = [f.name for f in Job._meta.fields]

    @admin.display(description="progress")
    def progress(self, obj: Job) -> str:
        return f"{obj.done}/{obj.total}" if obj.total else "-"
