"""CNN backbones that turn preprocessed images into L2-normalised feature vectors, and their registry.

One interface (:class:`Backbone`) over several runtimes (:mod:`indexing.features.runtimes`), one registry
(:data:`BACKBONES`: name -> :class:`BackboneSpec`, i.e. factory, input size, dimension, default weights, pixel
scaling and cut layer), which the Extractor model's choices, the CLI and the training read. A new backbone is its
factory plus one registry line (or a :func:`register_backbone` call). The shipped ones:

- ``mobilenet_v1``: the shipped, quantised MobileNetV1 1.0/224 ImageNet embedding extractor (TFLite, 1024-d).
  It needs no download, so it is the default offline model.
- ``mobilenet_v1v2``: that MobileNetV1 and the shipped, quantised MobileNetV2 1.0/224 ImageNet classifier's pooled
  features (TFLite, 1280-d, read before its logits), side by side (2304-d): the served sketch head's base, as it
  found the class of strangers' drawings more often than MobileNetV1 alone (docs/relevance.md).
- ``mobilenet_v1_float`` / ``mobilenet_v2_float``: the same two shipped models rebuilt as float Keras models from
  their TFLite graphs (:mod:`indexing.features.tflite_float`: dequantised weights, same layers), so their blocks
  can be fine-tuned (``train_extractor --strategy two-blocks | all``); their vectors are the TFLite ones up to the
  8-bit rounding of the activations (cosine ~0.99).
- ``inception_v3``: Keras InceptionV3 without its classifier, global average pooled (2048-d), the paper's
  backbone. Its ImageNet weights come from the Keras cache, a local weights file, or (for timing
  only) random initialisation with ``weights="none"``.
- ``darknet_tiny``: the Darknet-Tiny ImageNet classifier (TF.js layers format, float weights) rebuilt in Keras
  (:mod:`indexing.features.darknet`); the 512-d globally pooled activations before its 1x1 classifier convolutions.

TensorFlow, Keras and the TFLite runtime are imported inside functions only, so importing this module (as the
web process, Celery and the test suite do) stays cheap; only building a backbone loads a runtime.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from indexing.features.darknet import build_darknet_tiny
from indexing.features.runtimes import ConcatBackbone, KerasBackbone, TFLiteBackbone, WeightsUnavailableError
from indexing.features.tflite_float import TFLITE_FLOAT_SCALING
from indexing.features.vectors import l2_normalize

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "SHIPPED_WEIGHTS_DIR",
    "Backbone",
    "BackboneSpec",
    "KerasBackbone",
    "TFLiteBackbone",
    "WeightsUnavailableError",
    "available_backbones",
    "backbone_spec",
    "build_darknet_tiny",
    "default_backbone",
    "l2_normalize",
    "load_backbone",
    "register_backbone",
    "unregister_backbone",
    "warm_up",
]

DEFAULT_BACKBONE = "mobilenet_v1"
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MOBILENET_V1_FILE = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
MOBILENET_V2_FILE = "mobilenet_v2_1.0_224_quant.tflite"
# The quantised MobileNetV2 is a classifier: its 1,280 pooled features are this inner tensor, before the logits.
MOBILENET_V2_FEATURES = "MobilenetV2/Logits/AvgPool"
INCEPTION_V3_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
_KERAS_WEIGHTS_HOST = "storage.googleapis.com"
# Darknet-Tiny is read from the shared offline model folder (TF.js layers format, ~4 MB); override with
# weights=<folder containing model.json>.
DARKNET_TINY_DIR = Path(__file__).resolve().parents[3] / "shared" / "models" / "darknet-tiny"


@runtime_checkable
class Backbone(Protocol):
    """A feature extractor: a batch of preprocessed images in, L2-normalised vectors out.

    Attributes:
        name: Registry name, e.g. ``"mobilenet_v1"``.
        input_size: Side of the square input the images must be preprocessed to.
        dim: Length of each output vector.
        param_count: Number of weights (parameters) of the network.
        weights: Where the weights came from: ``"imagenet"``, ``"shipped"``, ``"none"`` or a file path.
    """

    name: str
    input_size: int
    dim: int
    param_count: int
    weights: str

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed preprocessed images.

        Args:
            images: ``uint8`` array ``(n, input_size, input_size, 3)`` from ``preprocess_sketch``/``preprocess_photo``.

        Returns:
            ``float32`` array ``(n, dim)``, each row of unit L2 norm (an all-zero activation stays zero).
        """
        ...


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: how to build it and what belongs to it, known without loading any runtime.

    Attributes:
        name: Registry name.
        factory: ``factory(weights, *, input_size, num_threads, jit_compile, **options) -> Backbone``; ``weights``
            is never None (``default_weights`` stands in) and the factory ignores the keywords it has no use for.
        input_size: Default input side in pixels.
        dim: Output vector length.
        default_weights: Weights used when ``load_backbone`` gets ``weights=None``.
        description: One line for the admin and the CLI.
        pixel_scaling: ``(scale, offset)``: a Keras backbone's network sees ``pixels * scale + offset``; None for a
            runtime that takes the uint8 pixels as they are (TFLite).
        cut_layer: The layer whose output feeds the network's last two blocks (what the ``two-blocks`` fine-tuning
            caches); None for a backbone that cannot be fine-tuned.
    """

    name: str
    factory: Callable[..., Backbone]
    input_size: int
    dim: int
    default_weights: str
    description: str
    pixel_scaling: tuple[float, float] | None = None
    cut_layer: str | None = None

    @property
    def trainable(self) -> bool:
        """Whether the backbone is a Keras model whose blocks can be fine-tuned (it has a cut layer and a scaling)."""
        return self.cut_layer is not None and self.pixel_scaling is not None


def keras_cache_candidates(filename: str) -> list[Path]:
    """Where Keras's ``get_file`` looks for a cached download, in its own order.

    Args:
        filename: The cached file name, e.g. ``INCEPTION_V3_NOTOP_FILE``.

    Returns:
        ``$KERAS_HOME/models/<filename>`` (or ``~/.keras/models/<filename>``), then the ``/tmp/.keras``
        fallback Keras uses when the home directory is not writable.
    """
    home = Path(os.environ.get("KERAS_HOME") or Path("~/.keras").expanduser())
    return [home / "models" / filename, Path("/tmp/.keras/models") / filename]


def _host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    # getaddrinfo() ignores socket timeouts, so resolve+connect in a daemon thread and stop waiting after
    # `timeout`: an offline machine with a slow resolver must not hang the web process for minutes.
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name=f"probe-{host}")
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _inception_v3(weights: str, *, input_size: int | None, jit_compile: bool, **_: Any) -> KerasBackbone:
    size = input_size or 299
    if size < 75:
        raise ValueError(f"inception_v3 needs input_size >= 75, got {size}")
    if weights == "imagenet":
        cached = next((p for p in keras_cache_candidates(INCEPTION_V3_NOTOP_FILE) if p.is_file()), None)
        if cached is None and not _host_reachable(_KERAS_WEIGHTS_HOST):
            raise WeightsUnavailableError(
                f"InceptionV3 ImageNet weights are not cached at {keras_cache_candidates(INCEPTION_V3_NOTOP_FILE)[0]} "
                f"and {_KERAS_WEIGHTS_HOST} is unreachable: copy {INCEPTION_V3_NOTOP_FILE} there, pass "
                f"weights=<path to the .h5>, or use backbone '{DEFAULT_BACKBONE}'"
            )
        keras_weights: str | None = "imagenet"
    elif weights == "none":
        keras_weights = None
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(f"InceptionV3 weights file not found: {path}")
        keras_weights = str(path)

    import keras

    try:
        model = keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=keras_weights, input_shape=(size, size, 3)
        )
    except Exception as exc:  # a failed download or a corrupt/mismatched file: one clear line, not a traceback
        if weights == "none":
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailableError(f"cannot load InceptionV3 weights {weights!r}: {first_line}") from exc
    # keras.applications.inception_v3.preprocess_input maps [0, 255] to [-1, 1]: x / 127.5 - 1.
    scale, offset = INCEPTION_V3_SCALING
    return KerasBackbone("inception_v3", model, weights=weights, scale=scale, offset=offset, jit_compile=jit_compile)


def _mobilenet_v1(
    weights: str, *, input_size: int | None, num_threads: int | None, batch_mode: str = "loop", **_: Any
) -> TFLiteBackbone:
    if input_size not in (None, 224):
        raise ValueError(f"mobilenet_v1 is a fixed 224x224 TFLite model, got input_size={input_size}")
    path = SHIPPED_WEIGHTS_DIR / MOBILENET_V1_FILE if weights == "shipped" else Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"mobilenet_v1 model file not found: {path}")
    # The model's input quantisation (scale 1/128, zero point 128) is exactly MobileNet's [-1, 1] pixel scaling,
    # so raw uint8 pixels go in unchanged.
    return TFLiteBackbone("mobilenet_v1", path, weights=weights, num_threads=num_threads, batch_mode=batch_mode)


def _mobilenet_v1v2(
    weights: str, *, input_size: int | None, num_threads: int | None, batch_mode: str = "loop", **_: Any
) -> ConcatBackbone:
    if input_size not in (None, 224):
        raise ValueError(f"mobilenet_v1v2 is a pair of fixed 224x224 TFLite models, got input_size={input_size}")
    folder = SHIPPED_WEIGHTS_DIR if weights == "shipped" else Path(weights)
    paths = [folder / MOBILENET_V1_FILE, folder / MOBILENET_V2_FILE]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise WeightsUnavailableError(f"mobilenet_v1v2 model file(s) not found: {', '.join(missing)}")
    parts: list[Any] = [
        TFLiteBackbone("mobilenet_v1", paths[0], weights=weights, num_threads=num_threads, batch_mode=batch_mode),
        # MobileNetV2's input quantisation is V1's (scale 1/128, zero point 128): the same uint8 pixels go in.
        TFLiteBackbone(
            "mobilenet_v2",
            paths[1],
            weights=weights,
            num_threads=num_threads,
            batch_mode=batch_mode,
            output_tensor=MOBILENET_V2_FEATURES,
        ),
    ]
    return ConcatBackbone("mobilenet_v1v2", parts, weights=weights)


def _mobilenet_float(
    name: str, filename: str, until: str | None, weights: str, *, input_size: int | None, jit_compile: bool, **_: Any
) -> KerasBackbone:
    from indexing.features.tflite_float import float_model_from_tflite

    path = SHIPPED_WEIGHTS_DIR / filename if weights == "shipped" else Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"{name} needs its TFLite model file: not found: {path}")
    model = float_model_from_tflite(path, until=until, input_size=input_size or 224, name=name)
    scale, offset = TFLITE_FLOAT_SCALING
    return KerasBackbone(name, model, weights=weights, scale=scale, offset=offset, jit_compile=jit_compile)


def _darknet_tiny(weights: str, *, input_size: int | None, jit_compile: bool, **_: Any) -> KerasBackbone:
    folder = DARKNET_TINY_DIR if weights == "shared" else Path(weights)
    manifest = folder / "model.json"
    if not manifest.is_file():
        raise WeightsUnavailableError(f"darknet_tiny model.json not found in {folder}")
    model = build_darknet_tiny(manifest, input_size=input_size or 224)
    # ml5's Darknet feeds pixels scaled to [0, 1].
    scale, offset = DARKNET_TINY_SCALING
    return KerasBackbone("darknet_tiny", model, weights=weights, scale=scale, offset=offset, jit_compile=jit_compile)


# keras.applications.inception_v3.preprocess_input maps [0, 255] to [-1, 1]: x / 127.5 - 1.
INCEPTION_V3_SCALING = (1.0 / 127.5, -1.0)
# ml5's Darknet feeds pixels scaled to [0, 1].
DARKNET_TINY_SCALING = (1.0 / 255.0, 0.0)


# The single registry of backbones: a new backbone is its factory plus one line here (or a register_backbone call).
# cut_layer: InceptionV3's mixed9 and mixed10 read mixed8; Darknet-Tiny's last two stages (conv 7-10 and conv
# 11-14) follow its third max pooling; MobileNetV1's last two blocks (Conv2d_12, Conv2d_13) read Conv2d_11's
# pointwise output, MobileNetV2's (expanded_conv_15, expanded_conv_16 and the 1x1 Conv_1) block 14's sum.
# The float MobileNets see pixels / 128 - 1 (TFLITE_FLOAT_SCALING: their uint8 input quantisation).
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "mobilenet_v1", _mobilenet_v1, 224, 1024, "shipped",
            "MobileNetV1 1.0/224 ImageNet, quantised TFLite, 1024-d (offline)",
        ),
        BackboneSpec(
            "mobilenet_v1v2", _mobilenet_v1v2, 224, 2304, "shipped",
            "MobileNetV1 1024-d + MobileNetV2 1280-d ImageNet pooled features, quantised TFLite, 2304-d (offline)",
        ),
        BackboneSpec(
            "mobilenet_v1_float", functools.partial(_mobilenet_float, "mobilenet_v1_float", MOBILENET_V1_FILE, None),
            224, 1024, "shipped",
            "MobileNetV1 1.0/224 ImageNet rebuilt as float Keras from the shipped TFLite, 1024-d (fine-tunable)",
            pixel_scaling=TFLITE_FLOAT_SCALING, cut_layer="Conv2d_11_pointwise",
        ),
        BackboneSpec(
            "mobilenet_v2_float",
            functools.partial(_mobilenet_float, "mobilenet_v2_float", MOBILENET_V2_FILE, MOBILENET_V2_FEATURES),
            224, 1280, "shipped",
            "MobileNetV2 1.0/224 ImageNet pooled features rebuilt as float Keras from the shipped TFLite, 1280-d "
            "(fine-tunable)",
            pixel_scaling=TFLITE_FLOAT_SCALING, cut_layer="expanded_conv_14_add",
        ),
        BackboneSpec(
            "inception_v3", _inception_v3, 299, 2048, "imagenet",
            "InceptionV3 ImageNet (Keras), average pooled, 2048-d",
            pixel_scaling=INCEPTION_V3_SCALING, cut_layer="mixed8",
        ),
        BackboneSpec(
            "darknet_tiny", _darknet_tiny, 224, 512, "shared",
            "Darknet-Tiny ImageNet (Keras, float), average pooled, 512-d",
            pixel_scaling=DARKNET_TINY_SCALING, cut_layer="max_pooling2d_3",
        ),
    )
}  # fmt: skip


def register_backbone(
    name: str,
    factory: Callable[..., Backbone],
    *,
    input_size: int,
    dim: int,
    default_weights: str = "none",
    description: str = "",
    pixel_scaling: tuple[float, float] | None = None,
    cut_layer: str | None = None,
    replace: bool = False,
) -> BackboneSpec:
    """Add a backbone to :data:`BACKBONES`: the Extractor model's choices and the CLI read it from there.

    Args:
        name: Registry name (``Extractor.backbone``), at most 50 characters.
        factory: See :attr:`BackboneSpec.factory`.
        input_size: Default input side in pixels.
        dim: Output vector length.
        default_weights: Weights used when none are named.
        description: One line for the admin and the CLI.
        pixel_scaling: See :attr:`BackboneSpec.pixel_scaling`.
        cut_layer: See :attr:`BackboneSpec.cut_layer`.
        replace: Allow replacing a registered backbone of that name (the runnable backbones of
            ``indexing.services.backbones`` are cached per registration, so a replacement is picked up).

    Returns:
        The registered spec.

    Raises:
        ValueError: A name that is taken (without ``replace``), empty or longer than 50 characters.
    """
    if not 1 <= len(name) <= 50:
        raise ValueError(f"a backbone name must have 1 to 50 characters, got {name!r}")
    if name in BACKBONES and not replace:
        raise ValueError(f"backbone {name!r} is registered already")
    spec = BackboneSpec(
        name, factory, input_size, dim, default_weights, description, pixel_scaling=pixel_scaling, cut_layer=cut_layer
    )
    BACKBONES[name] = spec
    return spec


def unregister_backbone(name: str) -> None:
    """Remove a backbone from :data:`BACKBONES` (tests that registered one); an unknown name is ignored."""
    BACKBONES.pop(name, None)


def available_backbones() -> list[str]:
    """Names accepted by :func:`load_backbone`.

    Returns:
        Sorted registry names.
    """
    return sorted(BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    """Describe a registered backbone without loading it.

    Args:
        name: A name from :func:`available_backbones`.

    Returns:
        Its :class:`BackboneSpec`.

    Raises:
        ValueError: Unknown name.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}") from None


def load_backbone(
    name: str,
    *,
    weights: str | None = None,
    input_size: int | None = None,
    num_threads: int | None = None,
    jit_compile: bool = False,
    **options: Any,
) -> Backbone:
    """Build a backbone by name.

    Args:
        name: A name from :func:`available_backbones`.
        weights: ``None`` for the backbone's default; ``"imagenet"``, ``"none"`` (random init, timing only) or a
            weights file path for ``inception_v3``; ``"shipped"`` or a ``.tflite`` path for ``mobilenet_v1``;
            ``"shared"`` or a folder with ``model.json`` for ``darknet_tiny``.
        input_size: Override the input side of the Keras backbones (e.g. 224 for a faster InceptionV3).
        num_threads: TFLite interpreter threads (default ``os.cpu_count()``); TensorFlow's own thread pools are
            process-wide and set with ``tf.config.threading`` before the first model is built.
        jit_compile: Compile Keras backbones with XLA.
        **options: Runtime-specific switches used by the benchmarks (``batch_mode`` for TFLite).

    Returns:
        A ready :class:`Backbone`.

    Raises:
        ValueError: Unknown name or an option the backbone does not support.
        WeightsUnavailableError: The weights are not on disk and cannot be downloaded.
    """
    spec = backbone_spec(name)
    chosen = spec.default_weights if weights is None else str(weights)
    return spec.factory(chosen, input_size=input_size, num_threads=num_threads, jit_compile=jit_compile, **options)


@functools.cache
def default_backbone() -> Backbone:
    """Load the default backbone once per process (web workers and Celery workers share this).

    Returns:
        The warmed-up ``mobilenet_v1`` backbone.
    """
    backbone = load_backbone(DEFAULT_BACKBONE)
    warm_up(backbone)
    return backbone


def warm_up(backbone: Backbone) -> None:
    """Run one blank image through a backbone so the first real query does not pay for tracing/allocation.

    Args:
        backbone: Any backbone.
    """
    backbone.embed(np.full((1, backbone.input_size, backbone.input_size, 3), 255, dtype=np.uint8))
