"""Cross-domain evaluation: metrics on hand examples, the class split and the Sketchy folder reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.crossdomain import CrossDomainResult, cross_domain_metrics, load_sketchy, markdown_table, split_classes


def test_instance_recall_and_category_metrics_on_a_hand_example() -> None:
    # Gallery: 4 photos on the axes; photos 0, 1 are class 0, photos 2, 3 class 1.
    gallery = np.eye(4, dtype=np.float32)
    gallery_labels = np.array([0, 0, 1, 1])
    # Query 0 (class 0, drawn from photo 1): ranking 1, 0, 2, 3 -> own photo first, AP 1.
    # Query 1 (class 1, drawn from photo 3): ranking 0, 2, 3, 1 (scores .9 .5 .3 .1) -> own photo 3rd;
    #   relevant at ranks 2 and 3: AP = (1/2 + 2/3) / 2.
    queries = np.array([[0.5, 0.9, 0.1, 0.0], [0.9, 0.1, 0.5, 0.3]], dtype=np.float32)
    out = cross_domain_metrics(
        queries, np.array([0, 1]), np.array([1, 3]), gallery, gallery_labels, precision_k=2, recall_ks=(1, 2, 3)
    )
    assert out["queries"] == 2
    assert out["gallery_size"] == 4
    assert out["inst_r@1"] == pytest.approx(0.5)
    assert out["inst_r@2"] == pytest.approx(0.5)
    assert out["inst_r@3"] == pytest.approx(1.0)
    assert out["map"] == pytest.approx((1.0 + (0.5 + 2 / 3) / 2) / 2)
    assert out["p@2"] == pytest.approx((1.0 + 0.5) / 2)


def test_a_query_whose_photo_is_not_in_the_gallery_is_an_instance_miss() -> None:
    gallery = np.eye(2, dtype=np.float32)
    out = cross_domain_metrics(
        np.array([[1.0, 0.0]], dtype=np.float32), np.array([0]), np.array([-1]), gallery, np.array([0, 1])
    )
    assert out["inst_r@1"] == 0.0
    assert out["map"] == 1.0


def test_split_classes_holds_out_every_fifth() -> None:
    mask = split_classes(125)
    assert mask.sum() == 25
    assert list(np.flatnonzero(mask)[:3]) == [4, 9, 14]


def test_load_sketchy_links_sketches_to_their_photos(tmp_path: Path) -> None:
    for cls, ids in {"cat": ["n1_1", "n1_2"], "dog": ["n2_7"]}.items():
        (tmp_path / "photo" / cls).mkdir(parents=True)
        (tmp_path / "sketch" / cls).mkdir(parents=True)
        for pid in ids:
            Image.new("RGB", (8, 8)).save(tmp_path / "photo" / cls / f"{pid}.jpg")
            for n in (1, 2):
                Image.new("L", (8, 8), 255).save(tmp_path / "sketch" / cls / f"{pid}-{n}.png")
    data = load_sketchy(tmp_path)
    assert data.classes == ["cat", "dog"]
    assert len(data.photo_paths) == 3
    assert len(data.sketch_paths) == 6
    for path, photo in zip(data.sketch_paths, data.sketch_photo, strict=True):
        assert data.photo_paths[photo].stem == path.stem.rsplit("-", 1)[0]
    assert list(data.sketch_labels) == [0, 0, 0, 0, 1, 1]
    with pytest.raises(FileNotFoundError):
        load_sketchy(tmp_path / "missing")


def test_markdown_table_has_one_line_per_row() -> None:
    result = CrossDomainResult(
        rows=[
            {"method": "edges", "split": "unseen", "gallery": "split", "queries": 2.0, "gallery_size": 4.0}
            | {"map": 0.5, "p@100": 0.1, "inst_r@1": 0.0, "inst_r@10": 1.0}
        ]
    )
    text = markdown_table(result)
    assert "| edges | unseen | split's classes | 2 | 4 | 0.5000 | 0.1000 | 0.0000 | 1.0000 |" in text
