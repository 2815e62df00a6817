"""The runtimes a backbone runs on: a TFLite interpreter or a traced Keras model, and a concatenation of backbones.

:class:`TFLiteBackbone`, :class:`KerasBackbone` and :class:`ConcatBackbone`; TensorFlow, Keras and the TFLite runtime
are imported inside functions only.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexing.features.vectors import l2_normalize

if TYPE_CHECKING:
    import keras

__all__ = ["ConcatBackbone", "KerasBackbone", "TFLiteBackbone", "WeightsUnavailableError", "tflite_param_count"]


class WeightsUnavailableError(RuntimeError):
    """The requested weights are neither on disk nor downloadable; the message says what to do."""


def _check_images(images: np.ndarray, input_size: int, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (input_size, input_size, 3):
        raise ValueError(f"{name} expects images of shape (n, {input_size}, {input_size}, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{name} expects uint8 images (preprocess_sketch/preprocess_photo output), got {images.dtype}")
    return images


# ----------------------------------------------------------------------------------------------- TFLite


def _tflite_interpreter(model_path: Path, num_threads: int, *, keep_tensors: bool = False) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the full TensorFlow wheel bundles the same interpreter
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806 - a class, named as upstream names it
    if not keep_tensors:
        return Interpreter(model_path=str(model_path), num_threads=num_threads)
    import warnings

    with warnings.catch_warnings():  # "intended for debugging": here it is how an inner layer is read, on purpose
        warnings.simplefilter("ignore", UserWarning)
        return Interpreter(model_path=str(model_path), num_threads=num_threads, experimental_preserve_all_tensors=True)


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

    ``output_tensor`` reads an inner tensor instead of the model's output (a classifier's pooled features before its
    logits: MobileNetV2's ``MobilenetV2/Logits/AvgPool``). TFLite reuses the memory of inner tensors, so the
    interpreter then keeps every tensor (``experimental_preserve_all_tensors``: a few MB more for a MobileNet;
    measured on the 2-core machine, no slower).
    """

    def __init__(
        self,
        name: str,
        model_path: Path,
        *,
        weights: str,
        num_threads: int | None = None,
        batch_mode: str = "loop",
        output_tensor: str | None = None,
    ) -> None:
        """Load a TFLite model.

        Args:
            name: Registry name.
            model_path: The ``.tflite`` file.
            weights: Origin recorded on the Extractor row (``"shipped"`` or the path).
            num_threads: Interpreter threads; defaults to ``os.cpu_count()``.
            batch_mode: ``"loop"`` (one invocation per image) or ``"resize"`` (resize the batch dimension).
            output_tensor: Name of the inner tensor to read as the vector (None: the model's output).

        Raises:
            ValueError: Unknown ``batch_mode``, a model whose input is not ``[1, s, s, 3]`` uint8, or no tensor named
                ``output_tensor`` in it.
        """
        if batch_mode not in ("loop", "resize"):
            raise ValueError(f"batch_mode must be 'loop' or 'resize', got {batch_mode!r}")
        self.name = name
        self.weights = weights
        self.batch_mode = batch_mode
        self.num_threads = num_threads or os.cpu_count() or 1
        self._model_path = model_path
        self._interpreter = _tflite_interpreter(model_path, self.num_threads, keep_tensors=output_tensor is not None)
        self._interpreter.allocate_tensors()
        self._batch = 1
        self._lock = threading.Lock()
        inp = self._interpreter.get_input_details()[0]
        out = self._interpreter.get_output_details()[0]
        if output_tensor is not None:
            named = [t for t in self._interpreter.get_tensor_details() if t["name"] == output_tensor]
            if not named:
                raise ValueError(f"{model_path} has no tensor named {output_tensor!r}")
            out = named[0]
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


# ------------------------------------------------------------------------------------------ concatenation


class ConcatBackbone:
    """Several backbones of one input size as one: each part's unit vector, concatenated and scaled by 1/sqrt(k).

    Each part keeps its weight in a cosine similarity whatever its width (the similarity of two concatenated vectors
    is the mean of the parts' similarities), and the result is of unit norm again.
    """

    def __init__(self, name: str, parts: list[Any], *, weights: str) -> None:
        """Join ``parts`` (each a :class:`~indexing.features.backbones.Backbone`).

        Raises:
            ValueError: No part, or parts of different input sizes.
        """
        if not parts:
            raise ValueError(f"{name}: a concatenation needs at least one backbone")
        sizes = {int(part.input_size) for part in parts}
        if len(sizes) != 1:
            raise ValueError(f"{name}: the backbones must share one input size, got {sorted(sizes)}")
        self.name = name
        self.weights = weights
        self.parts = parts
        self.input_size = sizes.pop()
        self.dim = sum(int(part.dim) for part in parts)
        self.param_count = sum(int(part.param_count) for part in parts)

    def __repr__(self) -> str:
        return f"ConcatBackbone(name={self.name!r}, parts={[p.name for p in self.parts]}, dim={self.dim})"

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch with every part; see :meth:`Backbone.embed`.

        Returns:
            ``float32`` ``(n, dim)``: the parts' L2-normalised rows side by side, times 1/sqrt(number of parts).
        """
        images = _check_images(images, self.input_size, self.name)
        scale = np.float32(1.0 / np.sqrt(len(self.parts)))
        return np.concatenate([part.embed(images) * scale for part in self.parts], axis=1)  # parts give unit rows
