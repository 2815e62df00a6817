"""Import a folder of images into a Collection (TU-Berlin layout, class folders, or a flat folder)."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from django.core.files.base import ContentFile
from django.db import transaction
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from indexing.models import Collection, Image

METADATA_SUFFIXES = {".csv", ".md", ".json", ".txt"}
_BATCH = 500


class ImportPathError(ValueError):
    """The folder to import does not exist or is not a folder."""


@dataclass(frozen=True)
class SourceFile:
    path: Path
    relative: str  # path relative to the imported folder, as shown to the user
    label: str
    source: str


@dataclass
class ImportReport:
    collection: str
    created_collection: bool = False
    scanned: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    per_split: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def summary(self) -> str:
        splits = ", ".join(f"{name} {count}" for name, count in sorted(self.per_split.items())) or "none"
        if self.imported == 0 and self.duplicates:
            head = f"{self.collection}: nothing new to import ({self.duplicates} files already in the collection)"
        else:
            head = f"{self.collection}: imported {self.imported} of {self.scanned} files ({splits})"
            if self.duplicates:
                head += f", {self.duplicates} already present"
        if self.skipped:
            head += f", {len(self.skipped)} skipped as unreadable"
        return head


def _numeric_key(path: Path) -> tuple[int, int | str]:
    """Sort key: the numeric id of a TU-Berlin file name (``241.png``), else its name."""
    match = re.match(r"^(\d+)", path.stem)
    return (0, int(match.group(1))) if match else (1, path.name)


def discover(root: Path, *, use_labels: bool = True) -> list[SourceFile]:
    """List the image files of a folder in one of the supported layouts.

    - TU-Berlin: ``root/png/<class>/<id>.png`` (the layout of ``sketches_png.zip``);
    - class folders: ``root/<class>/<file>``;
    - a flat folder of files (label empty), or class folders read with ``use_labels=False`` (label empty,
      the sub-folder kept as the source).
    Files whose suffix is not an image suffix are still returned when they sit in a class folder, so
    the import can report them by name.
    """
    if not root.exists():
        raise ImportPathError(f"{root}: no such folder")
    if not root.is_dir():
        raise ImportPathError(f"{root}: not a folder")
    base = root / "png" if (root / "png").is_dir() else root
    dataset = root.name
    files: list[SourceFile] = []
    for entry in sorted(base.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            for path in sorted(
                (p for p in entry.iterdir() if p.is_file() and not p.name.startswith(".")), key=_numeric_key
            ):
                relative = str(path.relative_to(root))
                if use_labels:
                    files.append(SourceFile(path, relative, entry.name, dataset))
                else:
                    files.append(SourceFile(path, relative, "", f"{dataset}/{entry.name}"))
        elif entry.is_file():
            # A flat folder: every file is a candidate photo; non-images are reported, not silently ignored,
            # apart from the metadata that datasets ship beside their images.
            if entry.suffix.lower() in METADATA_SUFFIXES or entry.name.upper().startswith(("LICENSE", "README")):
                continue
            files.append(SourceFile(entry, str(entry.relative_to(root)), "", dataset))
    return files


def assign_splits(files: list[SourceFile], test_per_class: int) -> dict[Path, str]:
    """The last ``test_per_class`` files of each class (by numeric id) are test, the rest train.

    Unlabelled files are all train: they are gallery items (distractors), never queries.
    """
    by_class: dict[str, list[SourceFile]] = defaultdict(list)
    for item in files:
        by_class[item.label].append(item)
    splits: dict[Path, str] = {}
    for label, members in by_class.items():
        ordered = sorted(members, key=lambda item: _numeric_key(item.path))
        cut = len(ordered) - test_per_class if label and test_per_class > 0 else len(ordered)
        for position, item in enumerate(ordered):
            splits[item.path] = Image.Split.TRAIN if position < cut else Image.Split.TEST
    return splits


def check_image(data: bytes) -> tuple[int, int] | str:
    """Return the image's (width, height), or why the bytes are not a readable image."""
    if not data:
        return "empty file"
    try:
        with PILImage.open(BytesIO(data)) as img:
            img.load()  # full decode: catches truncated files that verify() lets through
            return img.size
    except UnidentifiedImageError:
        return "not an image file"
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as exc:
        return f"damaged image ({exc})"


def _read(files: list[SourceFile]) -> Iterator[tuple[SourceFile, bytes | None, str | None]]:
    for item in files:
        try:
            yield item, item.path.read_bytes(), None
        except OSError as exc:
            yield item, None, f"cannot read ({exc.strerror or exc})"


def collection_import(
    *,
    path: Path,
    name: str,
    kind: str,
    test_per_class: int = 20,
    use_labels: bool = True,
    progress: Callable[[int], object] | None = None,
    on_total: Callable[[int], object] | None = None,
) -> ImportReport:
    """Import every image under ``path`` into the collection ``name`` (created when missing).

    Re-running is safe: files already in the collection (same sha256) are counted, not stored again.
    """
    if kind not in Collection.Kind.values:
        raise ValueError(f"kind must be one of {', '.join(Collection.Kind.values)}, got {kind!r}")
    if test_per_class < 0:
        raise ValueError(f"test_per_class must be >= 0, got {test_per_class}")
    files = discover(path, use_labels=use_labels)
    splits = assign_splits(files, test_per_class)
    collection, created = Collection.objects.get_or_create(name=name, defaults={"kind": kind})
    report = ImportReport(collection=collection.name, created_collection=created, scanned=len(files))
    if on_total:
        on_total(len(files))
    known = set(Image.objects.filter(collection=collection).values_list("sha256", flat=True))
    pending: list[Image] = []
    for item, data, error in _read(files):
        if progress:
            progress(1)
        checked = check_image(data) if data is not None else (error or "unreadable")
        if isinstance(checked, str):
            report.skipped.append((item.relative, checked))
            continue
        assert data is not None
        digest = hashlib.sha256(data).hexdigest()
        if digest in known:
            report.duplicates += 1
            continue
        known.add(digest)
        image = Image(
            collection=collection,
            sha256=digest,
            label=item.label,
            split=splits[item.path],
            source=item.source,
            original_name=item.relative,
            width=checked[0],
            height=checked[1],
        )
        # Saving through the storage writes the file under MEDIA_ROOT.
        image.file.save(item.path.name, ContentFile(data), save=False)
        pending.append(image)
        if len(pending) >= _BATCH:
            _flush(pending, report)
    _flush(pending, report)
    return report


def _flush(pending: list[Image], report: ImportReport) -> None:
    if not pending:
        return
    with transaction.atomic():
        Image.objects.bulk_create(pending)
    for image in pending:
        report.per_split[image.split] += 1
    report.imported += len(pending)
    pending.clear()
