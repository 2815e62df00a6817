"""CNN backbones that turn preprocessed images into L2-normalised feature vectors.

One interface (:class:`Backbone`) over several runtimes:

- ``mobilenet_v1``: the shipped, quantised MobileNetV1 1.0/224 ImageNet embedding extractor (TFLite, 1024-d).
  It needs no download, so it is the default offline model.
- ``inception_v3``: Keras InceptionV3 without its classifier, global average pooled (2048-d), the paper's
  backbone. Its ImageNet weights come from the Keras cache, a local weights file, or (for timing
  only) random initialisation with ``weights="none"``.
- ``darknet_tiny``: the Darknet-Tiny ImageNet classifier (TF.js layers format, float weights) rebuilt in Keras;
  the 512-d globally pooled activations before its 1x1 classifier convolutions.

TensorFlow, Keras and the TFLite runtime are imported inside functions only, so importing this module (as the
web process, Celery and the test suite do) stays cheap; only building a backbone loads a runtime.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import keras

__all__ = [
    "DEFAULT_BACKBONE",
    "SHIPPED_WEIGHTS_DIR",
    "Backbone",
    "BackboneSpec",
    "KerasBackbone",
    "TFLiteBackbone",
    "WeightsUnavailableError",
    "available_backbones",
    "backbone_spec",
    "default_backbone",
    "l2_normalize",
    "load_backbone",
    "warm_up",
]

DEFAULT_BACKBONE = "mobilenet_v1"
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MOBILENET_V1_FILE = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
INCEPTION_V3_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
_KERAS_WEIGHTS_HOST = "storage.googleapis.com"
# Darknet-Tiny is read from the shared offline model folder (TF.js layers format, ~4 MB); override with
# weights=<folder containing model.json>.
DARKNET_TINY_DIR = Path(__file__).resolve().parents[3] / "shared" / "models" / "darknet-tiny"


class WeightsUnavailableError(RuntimeError):
    """The requested weights are neither on disk nor downloadable; the message says what to do."""


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
    """What a registered backbone is, known without loading any runtime.

    Attributes:
        name: Registry name.
        input_size: Default input side in pixels.
        dim: Output vector length.
        default_weights: Weights used when ``load_backbone`` gets ``weights=None``.
        description: One line for the admin and the CLI.
    """

    name: str
    input_size: int
    dim: int
    default_weights: str
    description: str


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm.

    Args:
        vectors: ``(n, dim)`` array.

    Returns:
        ``float32`` ``(n, dim)``; rows whose norm is 0 are returned as zeros rather than NaN.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _check_images(images: np.ndarray, input_size: int, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (input_size, input_size, 3):
        raise ValueError(f"{name} expects images of shape (n, {input_size}, {input_size}, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{name} expects uint8 images (preprocess_sketch/preprocess_photo output), got {images.dtype}")
    return images


# ----------------------------------------------------------------------------------------------- TFLite


def _tflite_interpreter(model_path: Path, num_threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the full TensorFlow wheel bundles the same interpreter
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806 - a class, named as upstream names it
    return Interpreter(model_path=str(model_path), num_threads=num_threads)


def tflite_param_count(interpreter: Any) -> int:
    """Count the weights of a TFLite model.

    Method: a weight (or bias) is a tensor that some operator reads but no operator writes and that is not a
    model input; the count is the sum of those tensors' element counts. For the quantised MobileNetV1 this gives
    3,196,032: batch normalisation is folded into the convolutions, so it is slightly below Keras's 3,228,864
    for the same network (which counts BN's gamma, beta, mean and variance separately).

    Args:
        interpreter: An allocated ``Interpreter``.

    Returns:
        The number of parameters, or 0 when the runtime does not expose its operator graph.
    """
    try:
        ops = interpreter._get_ops_details()  # the only way to see the graph; stable across TF 2.x and LiteRT
    except AttributeError:
        return 0
    produced: set[int] = set()
    consumed: set[int] = set()
    for op in ops:
        produced.update(int(i) for i in op["outputs"])
        consumed.update(int(i) for i in op["inputs"] if i >= 0)  # -1 marks an omitted optional input
    inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    shapes = {int(t["index"]): t["shape"] for t in interpreter.get_tensor_details()}
    return sum(int(np.prod(shapes[i])) for i in consumed - produced - inputs if i in shapes)


class TFLiteBackbone:
    """A TFLite embedding model with a uint8 image input and a (possibly quantised) vector output.

    The interpreter has a fixed batch dimension of 1. Measured interleaved on the idle 2-core development machine,
    a batch of 32 through ``resize_tensor_input`` ran at 76-77 images/s against 73-75 for 32 single invocations,
    so ``embed`` loops by default: ~3 % slower in bulk, but a single query after a bulk batch never pays for a
    tensor reallocation. ``batch_mode="resize"`` is there for bulk-only workers.
    An interpreter is not thread-safe, so calls are serialised with a lock.
    """

    def __init__(
        self,
        name: str,
        model_path: Path,
        *,
        weights: str,
        num_threads: int | None = None,
        batch_mode: str = "loop",
    ) -> None:
        """Load a TFLite model.

        Args:
            name: Registry name.
            model_path: The ``.tflite`` file.
            weights: Origin recorded on the Extractor row (``"shipped"`` or the path).
            num_threads: Interpreter threads; defaults to ``os.cpu_count()``.
            batch_mode: ``"loop"`` (one invocation per image) or ``"resize"`` (resize the batch dimension).

        Raises:
            ValueError: Unknown ``batch_mode`` or a model whose input is not ``[1, s, s, 3]`` uint8.
        """
        if batch_mode not in ("loop", "resize"):
            raise ValueError(f"batch_mode must be 'loop' or 'resize', got {batch_mode!r}")
        self.name = name
        self.weights = weights
        self.batch_mode = batch_mode
        self.num_threads = num_threads or os.cpu_count() or 1
        self._model_path = model_path
        self._interpreter = _tflite_interpreter(model_path, self.num_threads)
        self._interpreter.allocate_tensors()
        self._batch = 1
        self._lock = threading.Lock()
        inp = self._interpreter.get_input_details()[0]
        out = self._interpreter.get_output_details()[0]
        shape = tuple(int(v) for v in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3 or inp["dtype"] != np.uint8:
            raise ValueError(f"{model_path} must take uint8 [1, s, s, 3] images, takes {inp['dtype']} {list(shape)}")
        self.input_size = shape[1]
        self.dim = int(np.prod(out["shape"][1:]))
        self._input_index = int(inp["index"])
        self._output_index = int(out["index"])
        scale, zero_point = out["quantization"]
        # A float model reports scale 0: its output needs no dequantisation.
        self._out_scale = float(scale) if scale else 1.0
        self._out_zero_point = float(zero_point) if scale else 0.0
        self.param_count = tflite_param_count(self._interpreter)

    def __repr__(self) -> str:
        return f"TFLiteBackbone(name={self.name!r}, dim={self.dim}, input_size={self.input_size})"

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch; see :meth:`Backbone.embed`.

        Args:
            images: ``uint8`` ``(n, input_size, input_size, 3)``.

        Returns:
            ``float32`` ``(n, dim)`` L2-normalised rows.

        Raises:
            ValueError: Wrong shape or dtype.
        """
        images = _check_images(images, self.input_size, self.name)
        n = images.shape[0]
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self.batch_mode == "resize":
                raw = self._invoke_resized(images)
            else:
                raw = np.empty((n, self.dim), dtype=np.float32)
                for i in range(n):
                    self._interpreter.set_tensor(self._input_index, images[i : i + 1])
                    self._interpreter.invoke()
                    raw[i] = self._interpreter.get_tensor(self._output_index).reshape(-1)
        # Dequantise (q - zero_point) * scale: the scale does not change the direction, but the zero point does.
        return l2_normalize((raw - self._out_zero_point) * self._out_scale)

    def _invoke_resized(self, images: np.ndarray) -> np.ndarray:
        n = images.shape[0]
        if n != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, [n, self.input_size, self.input_size, 3])
            self._interpreter.allocate_tensors()
            self._batch = n
        self._interpreter.set_tensor(self._input_index, np.ascontiguousarray(images))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index).reshape(n, -1).astype(np.float32)


# ------------------------------------------------------------------------------------------------ Keras


class KerasBackbone:
    """A Keras feature model called through one traced ``tf.function`` with a fixed input signature.

    ``model.predict`` builds a data pipeline on every call and a plain eager ``model(x)`` call dispatches every op
    from Python; in a quiet run on the 2-core machine one 299x299 image took ~220 ms through ``predict``,
    550-830 ms eager and ~105 ms through this traced function (``benchmarks/extract_bench.py``). Its signature
    is ``uint8 [None, s, s, 3]`` so every batch size reuses one trace, and the cast plus the model's
    own ``preprocess_input`` scaling run inside the graph.
    """

    def __init__(
        self,
        name: str,
        model: keras.Model,
        *,
        weights: str,
        scale: float,
        offset: float,
        batch_size: int = 32,
        jit_compile: bool = False,
    ) -> None:
        """Wrap a built Keras model whose output is ``(n, dim)`` (or pools to it).

        Args:
            name: Registry name.
            model: A model taking float32 ``(n, s, s, 3)``.
            weights: Origin of the weights (``"imagenet"``, a path or ``"none"``).
            scale: Pixel scaling: the model sees ``pixels * scale + offset``.
            offset: See ``scale``.
            batch_size: Largest batch sent through the network at once (bounds memory).
            jit_compile: Compile the forward pass with XLA.

        Raises:
            ValueError: ``batch_size`` < 1 or a model input that is not square RGB.
        """
        import tensorflow as tf

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        shape = tuple(model.input_shape)
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
            raise ValueError(f"{name}: model input must be (None, s, s, 3), got {shape}")
        self.name = name
        self.weights = weights
        self.model = model
        self.input_size = int(shape[1])
        self.dim = int(np.prod(model.output_shape[1:]))
        self.param_count = int(model.count_params())
        self.batch_size = batch_size
        self.jit_compile = jit_compile

        def forward(images: tf.Tensor) -> tf.Tensor:
            x = tf.cast(images, tf.float32) * scale + offset
            y = model(x, training=False)
            return tf.reshape(y, (tf.shape(y)[0], -1))

        self._forward = tf.function(
            forward,
            input_signature=[tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.uint8)],
            jit_compile=jit_compile,
            reduce_retracing=True,
        )

    def __repr__(self) -> str:
        return f"KerasBackbone(name={self.name!r}, dim={self.dim}, input_size={self.input_size})"

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch; see :meth:`Backbone.embed`.

        Args:
            images: ``uint8`` ``(n, input_size, input_size, 3)``.

        Returns:
            ``float32`` ``(n, dim)`` L2-normalised rows.

        Raises:
            ValueError: Wrong shape or dtype.
        """
        images = _check_images(images, self.input_size, self.name)
        n = images.shape[0]
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            self._forward(images[start : start + self.batch_size]).numpy() for start in range(0, n, self.batch_size)
        ]
        return l2_normalize(np.concatenate(parts, axis=0))


# -------------------------------------------------------------------------------------------- factories


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
    return KerasBackbone(
        "inception_v3", model, weights=weights, scale=1.0 / 127.5, offset=-1.0, jit_compile=jit_compile
    )


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


def _darknet_tiny(weights: str, *, input_size: int | None, jit_compile: bool, **_: Any) -> KerasBackbone:
    folder = DARKNET_TINY_DIR if weights == "shared" else Path(weights)
    manifest = folder / "model.json"
    if not manifest.is_file():
        raise WeightsUnavailableError(f"darknet_tiny model.json not found in {folder}")
    model = build_darknet_tiny(manifest, input_size=input_size or 224)
    # ml5's Darknet feeds pixels scaled to [0, 1].
    return KerasBackbone("darknet_tiny", model, weights=weights, scale=1.0 / 255.0, offset=0.0, jit_compile=jit_compile)


def build_darknet_tiny(manifest: Path, *, input_size: int = 224) -> keras.Model:
    """Rebuild the TF.js Darknet-Tiny classifier in Keras 3 and return its 512-d pooled feature model.

    The TF.js topology is a plain chain of (Conv2D, BatchNorm, LeakyReLU, optional MaxPool) blocks written by
    Keras 2.1.6; rather than deserialising that old config, the chain is rebuilt layer by layer from it and the
    float32 shards are assigned by weight name. The feature is the global average of the last 512-channel
    activation, i.e. the network minus its two 1x1 classifier convolutions.

    Args:
        manifest: Path to ``model.json``; the weight shards sit next to it.
        input_size: Input side (the network is fully convolutional; ImageNet training used 224).

    Returns:
        A Keras model ``(None, s, s, 3) float32 -> (None, 512)``.

    Raises:
        WeightsUnavailableError: A shard is missing or a weight's shape does not match.
    """
    import keras

    spec = json.loads(manifest.read_text())
    layers_cfg = spec["modelTopology"]["model_config"]["config"]["layers"]
    values = _read_tfjs_weights(manifest.parent, spec["weightsManifest"])

    # Stop after the activation of the last 512-channel convolution; what follows is the classifier.
    stop, filters = -1, 0
    for i, layer_cfg in enumerate(layers_cfg):
        if layer_cfg["class_name"] == "Conv2D":
            filters = layer_cfg["config"]["filters"]
        elif layer_cfg["class_name"] == "LeakyReLU" and filters == 512:
            stop = i
    if stop < 0:
        raise WeightsUnavailableError(f"{manifest}: no 512-channel block found; not the Darknet-Tiny topology")

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = inputs
    for layer_cfg in layers_cfg[: stop + 1]:
        kind, cfg = layer_cfg["class_name"], layer_cfg["config"]
        lname = cfg["name"]
        if kind == "Conv2D":
            layer = keras.layers.Conv2D(
                cfg["filters"],
                tuple(cfg["kernel_size"]),
                strides=tuple(cfg["strides"]),
                padding=cfg["padding"],
                use_bias=cfg["use_bias"],
                name=lname,
            )
            x = layer(x)
            _assign(layer, values, lname, ["kernel", "bias"] if cfg["use_bias"] else ["kernel"])
        elif kind == "BatchNormalization":
            layer = keras.layers.BatchNormalization(epsilon=cfg["epsilon"], name=lname)
            x = layer(x)
            _assign(layer, values, lname, ["gamma", "beta", "moving_mean", "moving_variance"])
        elif kind == "LeakyReLU":
            x = keras.layers.LeakyReLU(negative_slope=cfg["alpha"], name=lname)(x)
        elif kind == "MaxPooling2D":
            x = keras.layers.MaxPooling2D(
                tuple(cfg["pool_size"]), strides=tuple(cfg["strides"]), padding=cfg["padding"], name=lname
            )(x)
        elif kind != "InputLayer":
            raise WeightsUnavailableError(f"{manifest}: unexpected layer {kind} {lname}; not the Darknet-Tiny topology")
    pooled = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, pooled, name="darknet_tiny_features")


def _read_tfjs_weights(folder: Path, groups: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for group in groups:
        try:
            blob = b"".join((folder / p).read_bytes() for p in group["paths"])
        except OSError as exc:
            raise WeightsUnavailableError(f"darknet_tiny weight shard missing: {exc}") from exc
        offset = 0
        for w in group["weights"]:
            if w.get("dtype", "float32") != "float32":
                raise WeightsUnavailableError(f"darknet_tiny: unsupported weight dtype {w['dtype']} for {w['name']}")
            count = int(np.prod(w["shape"])) if w["shape"] else 1
            values[w["name"]] = np.frombuffer(blob, "<f4", count, offset).reshape(w["shape"])
            offset += 4 * count
    return values


def _assign(layer: Any, values: dict[str, np.ndarray], lname: str, names: list[str]) -> None:
    arrays = []
    for n in names:
        key = f"{lname}/{n}"
        if key not in values:
            raise WeightsUnavailableError(f"darknet_tiny: weight {key} missing from the shards")
        arrays.append(values[key])
    try:
        layer.set_weights(arrays)
    except ValueError as exc:
        raise WeightsUnavailableError(f"darknet_tiny: weight shapes of {lname} do not match: {exc}") from exc


@dataclass(frozen=True)
class _Entry:
    spec: BackboneSpec
    factory: Callable[..., Backbone]


_REGISTRY: dict[str, _Entry] = {
    "mobilenet_v1": _Entry(
        BackboneSpec(
            "mobilenet_v1", 224, 1024, "shipped", "MobileNetV1 1.0/224 ImageNet, quantised TFLite, 1024-d (offline)"
        ),
        _mobilenet_v1,
    ),
    "inception_v3": _Entry(
        BackboneSpec("inception_v3", 299, 2048, "imagenet", "InceptionV3 ImageNet (Keras), average pooled, 2048-d"),
        _inception_v3,
    ),
    "darknet_tiny": _Entry(
        BackboneSpec("darknet_tiny", 224, 512, "shared", "Darknet-Tiny ImageNet (Keras, float), average pooled, 512-d"),
        _darknet_tiny,
    ),
}


def available_backbones() -> list[str]:
    """Names accepted by :func:`load_backbone`.

    Returns:
        Sorted registry names.
    """
    return sorted(_REGISTRY)


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
        return _REGISTRY[name].spec
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
    return _REGISTRY[name].factory(
        chosen, input_size=input_size, num_threads=num_threads, jit_compile=jit_compile, **options
    )


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
