from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image as PILImage

from indexing.models import Collection, Image
from indexing.services.importer import ImportPathError, collection_import
from tests.conftest import DEMO_DATA, sketch_png, write_tu_berlin

pytestmark = pytest.mark.django_db


def test_tu_berlin_layout_splits_last_ids_of_each_class_into_test(tmp_path: Path) -> None:
    # Ids deliberately not in lexical order: 9 < 10 < 100 numerically.
    root = write_tu_berlin(tmp_path / "tu", {"cat": [100, 9, 10, 11, 12], "dog": [1, 2, 3, 4, 5]})
    report = collection_import(path=root, name="tu", kind="sketches", test_per_class=2)
    assert report.imported == 10
    assert report.skipped == []
    test_names = set(Image.objects.filter(split="test").values_list("original_name", flat=True))
    assert test_names == {"png/cat/12.png", "png/cat/100.png", "png/dog/4.png", "png/dog/5.png"}
    assert set(Image.objects.values_list("label", flat=True)) == {"cat", "dog"}
    image = Image.objects.get(original_name="png/cat/9.png")
    assert (image.width, image.height) == (64, 64)
    assert Path(image.file.path).read_bytes() == (root / "png/cat/9.png").read_bytes()


def test_class_folder_layout_without_png_parent(tmp_path: Path) -> None:
    root = write_tu_berlin(tmp_path / "classes", {"cat": [1, 2, 3]}, layout="classes")
    report = collection_import(path=root, name="classes", kind="sketches", test_per_class=1)
    assert report.imported == 3
    assert Image.objects.get(original_name="cat/3.png").split == "test"


def test_flat_folder_of_photos_has_empty_labels_and_skips_metadata(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for index in range(3):
        buffer = io.BytesIO()
        PILImage.new("RGB", (20, 10), (index * 80, 10, 10)).save(buffer, format="JPEG")
        (root / f"p{index}.jpg").write_bytes(buffer.getvalue())
    (root / "labels.csv").write_text("image,label\n")
    report = collection_import(path=root, name="photos", kind="photos", test_per_class=0)
    assert report.imported == 3
    assert report.skipped == []
    assert set(Image.objects.values_list("label", "split")) == {("", "train")}


def test_reimport_is_a_no_op_that_says_so(tmp_path: Path) -> None:
    root = write_tu_berlin(tmp_path / "tu", {"cat": [1, 2, 3]})
    collection_import(path=root, name="tu", kind="sketches", test_per_class=1)
    again = collection_import(path=root, name="tu", kind="sketches", test_per_class=1)
    assert (again.imported, again.duplicates) == (0, 3)
    assert "nothing new" in again.summary()
    assert Image.objects.count() == 3


def test_identical_files_are_stored_once(tmp_path: Path) -> None:
    root = write_tu_berlin(tmp_path / "tu", {"cat": [1, 2]})
    (root / "png/cat/3.png").write_bytes((root / "png/cat/1.png").read_bytes())
    report = collection_import(path=root, name="tu", kind="sketches", test_per_class=0)
    assert (report.imported, report.duplicates) == (2, 1)


def test_corrupt_and_fake_images_are_named_skipped_and_counted(tmp_path: Path) -> None:
    root = write_tu_berlin(tmp_path / "tu", {"cat": [1, 2]})
    good = (root / "png/cat/1.png").read_bytes()
    (root / "png/cat/3.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    (root / "png/cat/4.png").write_text("this is not an image")  # text file named .png
    (root / "png/cat/5.png").write_bytes(b"")  # empty file
    report = collection_import(path=root, name="tu", kind="sketches", test_per_class=0)
    assert report.imported == 2
    assert sorted(name for name, _ in report.skipped) == ["png/cat/3.png", "png/cat/4.png", "png/cat/5.png"]
    assert "3 skipped" in report.summary()
    assert Image.objects.count() == 2


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImportPathError, match="no such folder"):
        collection_import(path=tmp_path / "nope", name="x", kind="sketches")
    assert not Collection.objects.exists()


def test_command_reports_skipped_files_and_fails_only_when_nothing_imported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_tu_berlin(tmp_path / "tu", {"cat": [1]})
    (root / "png/cat/2.png").write_text("not a png")
    call_command("import_collection", str(root), name="tu", kind="sketches", test_per_class=0, verbosity=0)
    captured = capsys.readouterr()
    assert "skipped png/cat/2.png" in captured.err
    assert "imported 1 of 2" in captured.out
    # The same folder again: nothing new, but that is not a failure.
    call_command("import_collection", str(root), name="tu", kind="sketches", verbosity=0)
    assert "nothing new" in capsys.readouterr().out


def test_command_empty_folder_and_missing_path_are_command_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_collection", str(tmp_path / "empty"), name="e", kind="sketches", verbosity=0)
    with pytest.raises(CommandError, match="missing"):
        call_command("import_collection", str(tmp_path / "missing"), name="m", kind="sketches", verbosity=0)


def test_demo_collection_imports_with_all_classes() -> None:
    report = collection_import(path=DEMO_DATA, name="demo", kind="sketches", test_per_class=20)
    assert report.skipped == []
    assert report.imported == 3200
    assert dict(report.per_split) == {"train": 2400, "test": 800}  # the paper's 60/20 split
    assert Image.objects.values("label").distinct().count() == 40


def test_unlabelled_sub_folders_become_sources(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for sub in ("clothing", "imagenet"):
        (root / sub).mkdir(parents=True)
        (root / sub / "a.png").write_bytes(sketch_png(hash(sub) % 1000))
    collection_import(path=root, name="photos", kind="photos", test_per_class=0, use_labels=False)
    assert set(Image.objects.values_list("label", "source")) == {("", "photos/clothing"), ("", "photos/imagenet")}
