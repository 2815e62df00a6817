"""The photo class's sample photos (scikit-image's public-domain images, cropped, turned and lit at random) and the
protocols' vector caches, one per backbone and stroke style."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexing.services.sketch_views import SAMPLE_PHOTOS, negative_photos, sample_photo_views

pytest.importorskip("skimage", reason="scikit-image is not installed (requirements-dev.txt)")


def test_sample_views_are_seeded_random_crops_of_every_sample_photo() -> None:
    views = sample_photo_views(views=3, seed=1)
    assert len(views) == 3 * len(SAMPLE_PHOTOS)
    assert {v.mode for v in views} == {"RGB"}
    assert len({v.size for v in views}) > 5  # crops of many sizes
    again = sample_photo_views(views=3, seed=1)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(views, again, strict=True))
    other = sample_photo_views(views=3, seed=2)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(views, other, strict=False))


def test_negative_photos_reads_a_cache_instead_of_embedding(tmp_path: Path) -> None:
    cached = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "photos.npz", vectors=cached)
    np.savez(tmp_path / "photos-mobilenet_v1v2.npz", vectors=cached * 2)  # the served backbone's own cache
    np.testing.assert_array_equal(negative_photos(cache=tmp_path / "photos.npz", backbone="mobilenet_v1"), cached)
    np.testing.assert_array_equal(negative_photos(cache=tmp_path / "photos.npz"), cached * 2)


def test_thinned_sketches_have_their_own_cache_and_photos_are_never_thinned(tmp_path: Path) -> None:
    from indexing.services.sketch_views import folder_vectors

    caches = {"v.npz": 0, "v-thin.npz": 1, "v-mobilenet_v1v2.npz": 2, "v-mobilenet_v1v2-thin.npz": 3}
    for name, value in caches.items():
        np.savez(tmp_path / name, vectors=np.full((1, 2), value), labels=np.array(["cat"]))
    folder = tmp_path / "missing"  # a cache hit never reads the folder
    found = [
        int(folder_vectors(folder, kind=kind, cache=tmp_path / "v.npz", thin=thin, backbone=backbone)[0][0, 0])
        for backbone in ("mobilenet_v1", "mobilenet_v1v2")
        for kind, thin in (("sketch", False), ("sketch", True), ("photo", True))
    ]
    assert found == [0, 1, 0, 2, 3, 2]
    assert folder_vectors(folder, kind="sketch", cache=tmp_path / "v.npz", thin=True)[0][0, 0] == 3  # served


def test_without_scikit_image_the_error_says_how_to_train_anyway(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.resources

    from indexing.services.sketch_views import DataMissingError

    def missing(package: str) -> None:
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(DataMissingError, match="--photo-weight 0"):
        sample_photo_views(views=1)
