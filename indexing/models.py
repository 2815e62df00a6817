"""The data model of DESIGN.md: collections of images, extractors and their features, LSH index versions."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from indexing.features.backbones import BACKBONES
from indexing.lsh.hashing import FAMILIES


def family_choices() -> list[tuple[str, str]]:
    """LSHIndex.family's choices: the registered LSH families (indexing.lsh.hashing.FAMILIES), read when asked."""
    return [(name, spec.label) for name, spec in FAMILIES.items()]


def backbone_choices() -> list[tuple[str, str]]:
    """Extractor.backbone's choices: the registered backbones (indexing.features.backbones.BACKBONES)."""
    return [(name, spec.description) for name, spec in BACKBONES.items()]


class Collection(models.Model):
    class Kind(models.TextChoices):
        SKETCHES = "sketches"
        PHOTOS = "photos"
        MIXED = "mixed"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def image_upload_to(instance: Image, filename: str) -> str:
    # Content-addressed under the collection, so a file name can never clash or be guessed from user input.
    return f"collections/{instance.collection.name}/{instance.sha256[:2]}/{instance.sha256}{_suffix(filename)}"


def _suffix(filename: str) -> str:
    dot = filename.rfind(".")
    return filename[dot:].lower() if dot != -1 else ""


class Image(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train"
        TEST = "test"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="images")
    file = models.ImageField(upload_to=image_upload_to, max_length=255)
    sha256 = models.CharField(max_length=64)
    label = models.CharField(max_length=100, blank=True)  # class name; empty for unlabelled photos
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.TRAIN)
    source = models.CharField(max_length=200, blank=True)  # dataset / sub-folder the file came from
    original_name = models.CharField(max_length=255, blank=True)  # path relative to the imported folder
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Dedup on import: the same bytes are stored once per collection.
            models.UniqueConstraint(fields=["collection", "sha256"], name="image_unique_sha256_per_collection"),
        ]
        indexes = [
            # Serves the admin filters and the evaluation's per-class / per-split selections.
            models.Index(fields=["collection", "split", "label"], name="image_collection_split_label"),
        ]

    def __str__(self) -> str:
        return f"{self.collection.name}:{self.label or '-'}:{self.pk}"


class Extractor(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    backbone = models.CharField(max_length=50, choices=backbone_choices)  # registry name in indexing.features
    head = models.CharField(max_length=50, blank=True)  # "" = the backbone's pooled output; "model1".."model5"
    weights = models.CharField(max_length=255)  # origin: imagenet | shipped | none | a file path
    weights_file = models.FileField(upload_to="extractors/", blank=True)  # trained heads live under media
    input_size = models.PositiveIntegerField()
    output_dim = models.PositiveIntegerField()
    param_count = models.BigIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)  # training summary, per-class recall, ...
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Feature(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="features")
    extractor = models.ForeignKey(Extractor, on_delete=models.CASCADE, related_name="features")
    vector = models.BinaryField()  # float32 little-endian, L2-normalised, extractor.output_dim values
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # One vector per (image, extractor): extraction upserts, so a retried chunk never doubles a row.
            models.UniqueConstraint(fields=["image", "extractor"], name="feature_unique_image_extractor"),
        ]
        indexes = [
            # Serves loading one extractor's matrix for the index cache and the evaluation.
            models.Index(fields=["extractor", "image"], name="feature_extractor_image"),
        ]

    def __str__(self) -> str:
        return f"feature of image {self.image_id} by extractor {self.extractor_id}"


class LSHIndex(models.Model):
    class Status(models.TextChoices):
        BUILDING = "building"
        READY = "ready"
        RETIRED = "retired"
        FAILED = "failed"

    name = models.SlugField(max_length=100, default="default")  # versions of one index share a name
    version = models.PositiveIntegerField()
    extractor = models.ForeignKey(Extractor, on_delete=models.PROTECT, related_name="indexes")
    collections = models.ManyToManyField(Collection, related_name="indexes")
    family = models.CharField(max_length=8, choices=family_choices)
    num_tables = models.PositiveIntegerField()  # the paper's L
    hashes_per_table = models.PositiveIntegerField()  # the paper's K
    # The family's own parameters (indexing.lsh.hashing.family_params), e.g. {"w": 4.0} for "real", {} for "binary".
    params = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(default=0)
    center = models.BinaryField(null=True, blank=True)  # float32 mean subtracted before hashing, if centred
    # Extra buckets per table a search probes when it names none (the API's and the page's default): chosen with
    # L and K by build_index's autotune (indexing.lsh.autotune), whose measurements are kept in `tuning`.
    probes = models.PositiveIntegerField(default=0)
    tuning = models.JSONField(null=True, blank=True)  # None: L, K and probes were given by hand
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BUILDING)
    is_active = models.BooleanField(default=False)
    item_count = models.PositiveIntegerField(default=0)
    # The newest IndexAddition when the build read its features: its activation replays the later ones.
    additions_seen = models.BigIntegerField(default=0)
    build_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    built_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)  # when a newer version replaced it

    class Meta:
        ordering = ["name", "-version"]
        verbose_name = "LSH index"
        verbose_name_plural = "LSH indexes"
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="lshindex_unique_name_version"),
            # At most one active version per name: activation flips it in one transaction.
            models.UniqueConstraint(fields=["name"], condition=Q(is_active=True), name="lshindex_one_active_per_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.family} L={self.num_tables} K={self.hashes_per_table})"


class HashTable(models.Model):
    index = models.ForeignKey(LSHIndex, on_delete=models.CASCADE, related_name="tables")
    number = models.PositiveIntegerField()
    params = models.BinaryField()  # the table's projection parameters, serialised by indexing.lsh

    class Meta:
        ordering = ["index", "number"]
        constraints = [models.UniqueConstraint(fields=["index", "number"], name="hashtable_unique_number")]

    def __str__(self) -> str:
        return f"table {self.number} of index {self.index_id}"


class BucketEntry(models.Model):
    # The index as built, one row per (table, key, image), written in bulk (millions of rows per index version);
    # bucket statistics are computed from it in SQL, and Bucket packs the same triples one row per bucket for
    # searches. ONE B-tree: the primary key (table, key, image), whose order is the order index_build writes rows
    # in (appends); a second index, e.g. (table, image), would cost a third of the write rate (measured: 355k
    # rows/s with one B-tree, 111k with two). No surrogate id, no per-row foreign-key triggers: the builder
    # writes ids it just read, and deletes go by table (index_delete).
    pk = models.CompositePrimaryKey("table_id", "key", "image_id")
    table = models.ForeignKey(
        HashTable, on_delete=models.CASCADE, related_name="entries", db_constraint=False, db_index=False
    )
    key = models.BigIntegerField()  # the table's K hash values encoded into one signed 64-bit key
    # DO_NOTHING: deleting an image must not scan the bucket rows (no image index); searches skip ids whose
    # image is gone, and the next reindex drops them.
    image = models.ForeignKey(
        Image, on_delete=models.DO_NOTHING, related_name="bucket_entries", db_constraint=False, db_index=False
    )

    class Meta:
        verbose_name_plural = "bucket entries"

    def __str__(self) -> str:
        return f"image {self.image_id} in bucket {self.key} of table {self.table_id}"


class Bucket(models.Model):
    """One bucket of one hash table with its image ids packed into one value: the search's read side.

    BucketEntry holds the same (table, key, image) triples one per row (the index as written, bucket statistics);
    a search reads a few hundred buckets holding tens of thousands of ids, and one index probe returning one row
    per bucket costs PostgreSQL far less than one index tuple per id (measured at 1M images, 656 buckets and
    ~13k ids: 5 ms instead of 10 ms). Written by index_build next to the entries; an image added after the build
    is appended to its buckets' rows (indexing.services.updates) in the transaction that records its IndexAddition.
    """

    pk = models.CompositePrimaryKey("table_id", "key")
    table = models.ForeignKey(
        HashTable, on_delete=models.CASCADE, related_name="buckets", db_constraint=False, db_index=False
    )
    key = models.BigIntegerField()
    size = models.PositiveIntegerField()  # number of ids
    ids = models.BinaryField()  # image ids, ascending, each a big-endian int64 (PostgreSQL's int8send)

    def __str__(self) -> str:
        return f"bucket {self.key} of table {self.table_id} ({self.size} images)"


class IndexAddition(models.Model):
    """An image hashed into an index version after the version was built (imported, uploaded or re-embedded).

    Its buckets were appended to in the same transaction; a serving process reads the additions it has not seen
    (``id`` greater than the last it read) before each search, so the image is searchable on the next query
    everywhere, without a rebuild. A rebuild starts from the Feature rows and replays the additions written while
    it ran (indexing.services.updates).
    """

    id = models.BigAutoField(primary_key=True)
    index = models.ForeignKey(LSHIndex, on_delete=models.CASCADE, related_name="additions")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="index_additions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["index", "id"], name="indexaddition_index_id")]

    def __str__(self) -> str:
        return f"image {self.image_id} added to index {self.index_id}"


class Job(models.Model):
    """A long-running piece of work queued on Celery, with progress shown in the admin."""

    class Kind(models.TextChoices):
        IMPORT = "import"
        EXTRACT = "extract"
        INDEX = "index"
        EVALUATE = "evaluate"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    parameters = models.JSONField(default=dict, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"
