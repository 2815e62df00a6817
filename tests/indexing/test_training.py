"""train_extractor / compare_models end to end on a tiny collection with the TinyBackbone."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from indexing.models import Collection, Extractor, Feature
from indexing.services.backbones import extractor_backbone
from indexing.services.extraction import collection_extract_features
from tests.factories import make_indexed_collection, use_tiny_backbone

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_backbone(monkeypatch)
    make_indexed_collection(classes=3, per_class=6)  # collection "tiny", base extractor "tiny" with vectors


def train(**options: object) -> str:
    out = StringIO()
    arguments = {"collection": "tiny", "backbone": "tiny", "model": 1, "epochs": 3, "val_fraction": 0.2}
    arguments.update(options)
    call_command("train_extractor", stdout=out, verbosity=0, **arguments)
    return out.getvalue()


def test_train_extractor_creates_a_trained_extractor_row(tiny: None) -> None:
    output = train()

    trained = Extractor.objects.get(name="tiny-model1")
    assert "test mAP" in output
    assert "tiny-model1" in output
    assert (trained.backbone, trained.head, trained.weights) == ("tiny", "model1", "trained")
    assert trained.output_dim == 1024  # Model 1's hidden layer
    assert trained.param_count == 0 + (64 + 1) * 1024 + (1024 + 1) * 3
    details = trained.details
    assert set(details["per_class_recall"]) == {"class0", "class1", "class2"}
    assert all(0 <= r <= 1 for r in details["per_class_recall"].values())
    assert details["strategy"] == "head-only"
    assert details["test_queries"] == 3
    assert 0 <= details["test_map"] <= 1
    assert 0 <= details["test_accuracy"] <= 1
    media = Path(settings.MEDIA_ROOT)
    assert (media / str(trained.weights_file.name)).is_file()
    assert (media / details["curve"]).is_file()


def test_a_trained_extractor_embeds_through_its_head(tiny: None) -> None:
    train(model=2)
    trained = Extractor.objects.get(name="tiny-model2")

    backbone = extractor_backbone(trained)
    report = collection_extract_features(collection=Collection.objects.get(name="tiny"), extractor=trained)

    assert backbone.dim == 2048
    assert report.embedded == 18
    vectors = np.stack([np.frombuffer(bytes(f.vector), dtype="<f4") for f in Feature.objects.filter(extractor=trained)])
    assert vectors.shape == (18, 2048)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_siamese_model_trains_head_only(tiny: None) -> None:
    train(model=3, epochs=2)
    details = Extractor.objects.get(name="tiny-model3").details
    assert details["recall_method"].startswith("1-NN")
    assert set(details["per_class_recall"]) == {"class0", "class1", "class2"}


def test_retraining_needs_replace(tiny: None) -> None:
    train()
    with pytest.raises(CommandError, match="exists"):
        train()
    assert "replaced" in train(replace=True)


def test_compare_models_prints_a_table_with_the_baseline(tiny: None) -> None:
    train()
    out = StringIO()
    call_command("compare_models", collection="tiny", stdout=out)
    table = out.getvalue()
    assert "test mAP" in table
    assert "tiny-model1" in table
    assert "| tiny " in table  # the untrained base, from its stored vectors
    assert (Path(settings.MEDIA_ROOT) / "extractors" / "compare_models-tiny.png").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backbone": "nope"}, "unknown backbone"),
        ({"collection": "nope"}, "unknown collection"),
        ({"model": 7}, "model must be 1..5"),
        ({"strategy": "some"}, "strategy must be one of"),
        ({"strategy": "two-blocks"}, "cannot be fine-tuned"),
    ],
)
def test_bad_requests_are_command_errors(tiny: None, options: dict[str, object], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        train(**options)


def test_compare_models_unknown_collection_is_a_command_error(tiny: None) -> None:
    with pytest.raises(CommandError, match="unknown collection"):
        call_command("compare_models", collection="nope", stdout=StringIO())


def test_a_search_on_a_classifier_extractor_predicts_the_sketch_classes(tiny: None) -> None:
    from indexing.services.index import index_build
    from indexing.services.search import sketch_search
    from tests.conftest import sketch_png

    train(model=1)
    trained = Extractor.objects.get(name="tiny-model1")
    collection = Collection.objects.get(name="tiny")
    collection_extract_features(collection=collection, extractor=trained)
    index_build(extractor=trained, collections=[collection], family="binary", num_tables=4, hashes_per_table=2)

    result = sketch_search(image=sketch_png(5), top_k=3)

    assert [p.label for p in result.predictions]
    assert {p.label for p in result.predictions} <= {"class0", "class1", "class2"}
    scores = [p.score for p in result.predictions]
    assert scores == sorted(scores, reverse=True)
    assert 0.99 <= sum(scores) <= 1.01  # all 3 classes shown: the softmax sums to 1
    # Query by example reuses the stored vector: no CNN pass, so no predictions (and none are made up).
    assert sketch_search(image_id=collection.images.first().pk, top_k=3).predictions == []  # type: ignore[union-attr]


def test_embedding_with_a_head_maps_the_stored_base_vectors_without_the_cnn(
    tiny: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from indexing.features.backbones import register_backbone
    from tests.factories import TinyBackbone, make_image

    train(model=1)
    trained = Extractor.objects.get(name="tiny-model1")
    collection = Collection.objects.get(name="tiny")
    newcomer = make_image(collection, seed=4242, label="class0")  # no base vector yet
    calls: list[int] = []

    class CountingBackbone(TinyBackbone):
        def embed(self, images: np.ndarray) -> np.ndarray:
            calls.append(len(images))
            return super().embed(images)

    counting = CountingBackbone()
    # Registered again under the base's name: the cached base and the head over it are loaded afresh.
    register_backbone("tiny", lambda weights, **_: counting, input_size=32, dim=64, replace=True)
    extractor_backbone(trained)  # loading warms the model up with one blank image
    calls.clear()
    report = collection_extract_features(collection=collection, extractor=trained)
    assert report.embedded == 19
    assert calls == [1]  # the CNN ran for the one image without a base vector, not for the 18 others
    base = Extractor.objects.get(name="tiny")
    assert Feature.objects.filter(extractor=base, image=newcomer).exists()  # stored for the next head too
    # The mapped vectors equal the head run over the images themselves.
    wrapper = extractor_backbone(trained)
    stored = {
        f.image_id: np.frombuffer(bytes(f.vector), dtype="<f4") for f in Feature.objects.filter(extractor=trained)
    }
    from indexing.features.pipeline import prepare_image

    for image in collection.images.order_by("pk")[:4]:
        pixels = prepare_image(image.file.path, counting.input_size)
        assert np.allclose(stored[image.pk], wrapper.embed(pixels[np.newaxis])[0], atol=1e-5)


def test_training_logs_one_line_per_epoch_and_refuses_to_overwrite(
    tiny: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = StringIO()
    arguments = {"collection": "tiny", "backbone": "tiny", "model": 1, "epochs": 3, "val_fraction": 0.0}
    call_command("train_extractor", stdout=out, verbosity=1, **arguments)
    logged = capsys.readouterr().out
    assert logged.count("Epoch ") == 3
    assert "\r" not in logged  # no per-step progress bar
    assert "\b" not in logged
    with pytest.raises(CommandError, match="exists"):
        call_command("train_extractor", stdout=StringIO(), verbosity=0, **arguments)
    call_command("train_extractor", stdout=StringIO(), verbosity=0, force=True, **arguments)


def test_the_photo_class_is_never_suggested(tiny: None) -> None:
    from indexing.features.sketch_head import PHOTO_CLASS
    from indexing.services.index import index_build
    from indexing.services.search import sketch_search
    from indexing.serving import index_cache
    from tests.conftest import sketch_png

    train(model=1)
    trained = Extractor.objects.get(name="tiny-model1")
    collection = Collection.objects.get(name="tiny")
    collection_extract_features(collection=collection, extractor=trained)
    index_build(extractor=trained, collections=[collection], family="binary", num_tables=4, hashes_per_table=2)
    classes = list(trained.details["classes"])
    everything = {p.label for p in sketch_search(image=sketch_png(5), top_k=3).predictions}
    assert everything == set(classes)
    trained.details = {**trained.details, "classes": [PHOTO_CLASS, *classes[1:]]}
    trained.save(update_fields=["details"])
    index_cache.clear()  # a process loads an extractor's classes with the index version
    labels = [p.label for p in sketch_search(image=sketch_png(5), top_k=3).predictions]
    assert sorted(labels) == sorted(classes[1:])  # the same scores, less the photo class
