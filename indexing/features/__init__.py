"""Feature extraction: image decoding/preprocessing and CNN backbones (TensorFlow imported lazily).

Importing this package loads only NumPy and Pillow; a runtime (TFLite, TensorFlow/Keras) is imported when a
backbone is built.
"""

from __future__ import annotations

from indexing.features.backbones import (
    DEFAULT_BACKBONE,
    Backbone,
    BackboneSpec,
    WeightsUnavailableError,
    available_backbones,
    backbone_spec,
    default_backbone,
    l2_normalize,
    load_backbone,
    warm_up,
)
from indexing.features.pipeline import embed_images, prepare_image
from indexing.features.preprocess import (
    DEFAULT_SKETCH_DILATE,
    MAX_IMAGE_PIXELS,
    ImageDecodeError,
    load_image,
    preprocess_photo,
    preprocess_sketch,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_SKETCH_DILATE",
    "MAX_IMAGE_PIXELS",
    "Backbone",
    "BackboneSpec",
    "ImageDecodeError",
    "WeightsUnavailableError",
    "available_backbones",
    "backbone_spec",
    "default_backbone",
    "embed_images",
    "l2_normalize",
    "load_backbone",
    "load_image",
    "prepare_image",
    "preprocess_photo",
    "preprocess_sketch",
    "warm_up",
]
