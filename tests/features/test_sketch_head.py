"""The served sketch head: views, training rows, the int8 file round trip, retrieval by class probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexing.features.augment import AugmentSpec, drawing_view, page_render, raster_view
from indexing.features.heads import HeadBackbone
from indexing.features.sketch_head import (
    RETRIEVAL_LAYER,
    HeadRecipe,
    TrainingSet,
    ViewCache,
    embed_views,
    ensemble_members,
    fit_sketch_head,
    load_head_file,
    quantize_int8,
    quickdraw_folds,
    save_head,
)
from tests.factories import TinyBackbone


class _Base(TinyBackbone):
    """TinyBackbone at the tiny input size, so embed_views can run it."""


def _tu_folder(root: Path, classes: tuple[str, ...] = ("cat", "wine-bottle"), per_class: int = 3) -> Path:
    for c, label in enumerate(classes):
        (root / "png" / label).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("L", (64, 64), 255)
            image.paste(0, (8 + 12 * c, 8 + 4 * i, 30 + 12 * c, 12 + 4 * i))
            image.save(root / "png" / label / f"{i + 1}.png")
    return root


def _qd_folder(root: Path, words: tuple[str, ...] = ("cat", "wine bottle", "zebra"), per_word: int = 15) -> Path:
    root.mkdir()
    for w, word in enumerate(words):
        lines = []
        for i in range(per_word):
            strokes = [[[10, 200], [20 + w * 60, 20 + w * 60 + i]], [[30, 30 + i], [200, 10]]]
            lines.append(json.dumps({"word": word, "key_id": f"{w}{i}", "drawing": strokes}))
        (root / f"{word}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_views_change_width_and_completeness() -> None:
    strokes = [(np.array([0.0, 255.0]), np.array([0.0, 255.0])), (np.array([0.0, 255.0]), np.array([255.0, 0.0]))]
    rng = np.random.default_rng(0)
    ink = [(np.asarray(drawing_view(strokes, rng, AugmentSpec(cuts=(0.5,)))) < 128).sum() for _ in range(8)]
    whole = (np.asarray(page_render(strokes)) < 128).sum()
    assert len(set(ink)) > 1  # widths and poses vary
    assert min(ink) < whole  # half the strokes: one diagonal
    raster = raster_view(page_render(strokes), rng, AugmentSpec(flip=1.0, max_angle=0.0, raster_thickening=(5,)))
    assert (np.asarray(raster) < 128).sum() > whole  # thickened


def test_folds_are_three_drawings_per_word_in_file_order() -> None:
    from indexing.features.quickdraw import Drawing

    drawings = [Drawing(word=w, key_id=str(i), strokes=()) for w in ("a", "b") for i in range(15)]
    folds = quickdraw_folds(drawings)
    assert folds[:15].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert folds[15:].tolist() == folds[:15].tolist()


def test_views_of_the_shared_classes_are_embedded_once_and_cached(tmp_path: Path) -> None:
    tu = _tu_folder(tmp_path / "tu")
    qd = _qd_folder(tmp_path / "qd")
    views = embed_views(_Base(), tu_berlin=tu, quickdraw=qd, recipe=HeadRecipe(raster_views=1, drawing_views=1))
    # zebra is no TU-Berlin class; "wine bottle" is TU-Berlin's "wine-bottle".
    assert sorted(set(views.labels.tolist())) == ["cat", "wine-bottle"]
    assert (views.source == "tu").sum() == 6
    assert (views.source == "qd").sum() == 30
    assert set(views.views) == {"plain", "cut25", "cut50", "cut75", "raster0", "drawing0"}
    qd_rows = views.source == "qd"
    assert np.allclose(np.linalg.norm(views.views["cut50"][qd_rows], axis=1), 1, atol=1e-5)
    assert not views.views["cut50"][~qd_rows].any()  # cuts exist for stroke lists only
    views.save(tmp_path / "cache.npz")
    again = ViewCache.load(tmp_path / "cache.npz")
    assert np.array_equal(again.views["plain"], views.views["plain"])
    assert again.fold.tolist() == views.fold.tolist()
    rows = TrainingSet.from_cache(views, views.fold != 0, HeadRecipe(cuts=(0.5,), cut_weight=0.5))
    assert len(rows.targets) == 6 + 24 + 24  # TU plain, QD plain (fold 0 held out), QD cut50
    assert sorted(rows.weights.tolist()).count(0.5) == 24
    with pytest.raises(ValueError, match="raster5"):
        TrainingSet.from_cache(views, views.fold != 0, HeadRecipe(raster_views=6))


def test_the_int8_file_serves_nearly_the_same_retrieval_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((60, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data = TrainingSet(vectors, np.arange(60) % 3, np.array(["a", "b", "c"]), np.ones(60, np.float32))
    head = fit_sketch_head(data, HeadRecipe(hidden=(16,), epochs=2, members=1))
    size = save_head(head, tmp_path / "h.npz", classes=["a", "b", "c"], meta={"why": "test"})
    assert size < 20_000
    with np.load(tmp_path / "h.npz") as stored:
        assert stored["kernel_0"].dtype == np.int8
        assert stored["kernel_scale_0"].shape == (16,)
    loaded, classes, meta = load_head_file(tmp_path / "h.npz")
    assert classes == ["a", "b", "c"]
    assert meta == {"why": "test"}
    served = HeadBackbone(_Base(), loaded, name="t", layer=RETRIEVAL_LAYER)
    original = HeadBackbone(_Base(), head, name="t", layer=RETRIEVAL_LAYER)
    assert served.dim == 3
    assert served.num_classes == 3
    assert np.allclose(served.embed_features(vectors), original.embed_features(vectors), atol=2e-2)
    probabilities = head(vectors, training=False).numpy()
    expected = probabilities / np.linalg.norm(probabilities, axis=1, keepdims=True)
    assert np.allclose(original.embed_features(vectors), expected, atol=1e-5)
    with pytest.raises(ValueError, match="classes"):
        save_head(head, tmp_path / "x.npz", classes=["a"], meta={})
    with pytest.raises(FileNotFoundError):
        load_head_file(tmp_path / "missing.npz")


def test_int8_kernels_round_trip_within_half_a_step_per_column() -> None:
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((50, 7)).astype(np.float32) * np.array([1, 10, 0.01, 3, 1, 1, 1], np.float32)
    kernel[:, 6] = 0.0
    q, scale = quantize_int8(kernel)
    assert q.dtype == np.int8
    assert scale.shape == (7,)
    assert np.all(np.abs(q.astype(np.float32) * scale - kernel) <= scale / 2 + 1e-7)
    assert np.abs(q[:, :6]).max(axis=0).tolist() == [127] * 6  # each column's peak uses the whole range
    assert scale[6] == 1.0
    assert not q[:, 6].any()


def test_an_older_float16_head_file_still_loads(tmp_path: Path) -> None:
    kernel = np.eye(4, 3, dtype=np.float16)
    np.savez(
        tmp_path / "old.npz",
        kernel_0=kernel,
        bias_0=np.zeros(3, np.float16),
        classes=np.array(["a", "b", "c"]),
        meta=np.array("{}"),
    )
    head, classes, _ = load_head_file(tmp_path / "old.npz")
    assert classes == ["a", "b", "c"]
    np.testing.assert_allclose(head.get_layer(RETRIEVAL_LAYER).get_weights()[0], kernel.astype(np.float32))


def test_an_ensemble_averages_its_independently_trained_members(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((60, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data = TrainingSet(vectors, np.arange(60) % 3, np.array(["a", "b", "c"]), np.ones(60, np.float32))
    recipe = HeadRecipe(hidden=(16,), epochs=2, seed=5, members=1)
    ensemble = fit_sketch_head(data, HeadRecipe(hidden=(16,), epochs=2, seed=5, members=2))
    assert ensemble_members(ensemble) == 2
    singles = [fit_sketch_head(data, HeadRecipe(hidden=(16,), epochs=2, seed=seed, members=1)) for seed in (5, 6)]
    mean = np.mean([head(vectors, training=False).numpy() for head in singles], axis=0)
    np.testing.assert_allclose(ensemble(vectors, training=False).numpy(), mean, atol=1e-5)
    assert not np.allclose(mean, fit_sketch_head(data, recipe)(vectors, training=False).numpy(), atol=1e-3)
    save_head(ensemble, tmp_path / "e.npz", classes=["a", "b", "c"], meta={})
    loaded, _, _ = load_head_file(tmp_path / "e.npz")
    assert ensemble_members(loaded) == 2
    served = HeadBackbone(_Base(), loaded, name="t", layer=RETRIEVAL_LAYER)
    assert served.num_classes == 3  # the suggestion chips come from the mean probabilities
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    assert np.allclose(served.embed_features(vectors), expected, atol=2e-2)  # int8 weights
    with pytest.raises(ValueError, match="members"):
        fit_sketch_head(data, HeadRecipe(members=0))


def test_each_cut_view_keeps_its_own_share_of_the_strokes(tmp_path: Path) -> None:
    tu = _tu_folder(tmp_path / "tu")
    qd = _qd_folder(tmp_path / "qd")
    views = embed_views(_Base(), tu_berlin=tu, quickdraw=qd)
    qd_rows = views.source == "qd"
    # Two strokes per drawing: 25% and 50% keep one, 75% and the whole drawing both.
    assert np.allclose(views.views["cut25"][qd_rows], views.views["cut50"][qd_rows])
    assert np.allclose(views.views["cut75"][qd_rows], views.views["plain"][qd_rows])
    assert not np.allclose(views.views["cut50"][qd_rows], views.views["cut75"][qd_rows])


def test_photos_become_one_extra_class_only_when_the_recipe_weighs_them(tmp_path: Path) -> None:
    from indexing.features.sketch_head import PHOTO_CLASS

    views = embed_views(
        _Base(), tu_berlin=_tu_folder(tmp_path / "tu"), quickdraw=_qd_folder(tmp_path / "qd"), recipe=HeadRecipe()
    )
    photos = np.random.default_rng(0).random((5, views.views["plain"].shape[1])).astype(np.float32)
    plain = TrainingSet.from_cache(views, views.fold != 0, HeadRecipe(cuts=(), photo_weight=0), photos)
    assert PHOTO_CLASS not in plain.classes  # photo_weight 0: the photos are not used
    with_photos = TrainingSet.from_cache(views, views.fold != 0, HeadRecipe(cuts=(), photo_weight=0.7), photos)
    assert sorted(with_photos.classes.tolist()) == sorted([*plain.classes.tolist(), PHOTO_CLASS])
    photo_rows = with_photos.targets == with_photos.classes.tolist().index(PHOTO_CLASS)
    assert photo_rows.sum() == 5
    np.testing.assert_array_equal(with_photos.vectors[photo_rows], photos)
    assert np.allclose(with_photos.weights[photo_rows], 0.7)
    assert len(with_photos.targets) == len(plain.targets) + 5


def test_the_recipe_decides_whether_the_views_are_thinned(tmp_path: Path) -> None:
    from indexing.features.preprocess import load_image, preprocess_sketch
    from indexing.features.sketch_head import tu_berlin_files

    tu = _tu_folder(tmp_path / "tu")
    qd = _qd_folder(tmp_path / "qd")
    thinned = embed_views(_Base(), tu_berlin=tu, quickdraw=qd, recipe=HeadRecipe(thin_strokes=True))
    as_drawn = embed_views(_Base(), tu_berlin=tu, quickdraw=qd, recipe=HeadRecipe(thin_strokes=False))

    first = load_image(tu_berlin_files(tu)[0][0])
    for views, thin in ((thinned, True), (as_drawn, False)):
        expected = _Base().embed(preprocess_sketch(first, _Base.input_size, thin=thin)[np.newaxis])[0]
        np.testing.assert_allclose(views.views["plain"][0], expected, atol=1e-6)
    assert not np.allclose(thinned.views["plain"], as_drawn.views["plain"], atol=1e-3)
    assert HeadRecipe().thin_strokes
    assert HeadRecipe().as_dict()["thin_strokes"] is True


def test_the_shipped_head_maps_the_served_backbone_and_fits_the_budget() -> None:
    from indexing.features.backbones import backbone_spec
    from indexing.features.sketch_head import PHOTO_CLASS, SHIPPED_HEAD

    assert SHIPPED_HEAD.stat().st_size <= 10 * 1024 * 1024
    head, classes, meta = load_head_file(SHIPPED_HEAD)
    assert meta["backbone"] == HeadRecipe.backbone  # the head and the base it is served on agree
    assert meta["sketch_thin"] is HeadRecipe.thin_strokes
    assert int(head.input_shape[-1]) == backbone_spec(meta["backbone"]).dim
    assert (len(classes), PHOTO_CLASS in classes, ensemble_members(head)) == (41, True, HeadRecipe.members)
    assert "CC BY 4.0" in meta["data"]
