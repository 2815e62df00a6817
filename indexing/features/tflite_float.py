"""A float Keras copy of a quantised TFLite MobileNet, so that the shipped ImageNet weights can be fine-tuned.

The shipped MobileNetV1 and MobileNetV2 are uint8 TFLite graphs: fast, but no gradient runs through them, so until
now only a head over their frozen vectors could be trained. Their graphs are made of four kinds of operation
(``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``ADD``, ``AVERAGE_POOL_2D``; batch normalisation is already folded into each
convolution's weights and bias), so :func:`float_model_from_tflite` rebuilds the same network as a functional
Keras model with the dequantised weights (``(q - zero_point) x scale``): a convolution with a bias, ReLU6 where
the TFLite op clamps to [0, 6], ``same`` padding, the strides read from the tensor shapes. Only the activations'
8-bit rounding is gone, so its pooled vectors are the TFLite model's up to that rounding (a cosine of about 0.99
on sketches, checked in the tests), and every layer is a trainable float layer named after its TFLite scope
(``expanded_conv_14_add``, ``Conv2d_13_pointwise``...), which is what ``train_extractor --strategy two-blocks``
cuts at.

Reads the graph with the TFLite interpreter the project already ships (``ai-edge-litert``); no Django.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TFLITE_FLOAT_SCALING", "float_model_from_tflite", "layer_name"]

# The uint8 input of both MobileNets is quantised with scale 1/128 and zero point 128: the float network sees
# pixels / 128 - 1, i.e. [-1, 1] (BackboneSpec.pixel_scaling).
TFLITE_FLOAT_SCALING = (1.0 / 128.0, -1.0)

_SUPPORTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D"}
# Name parts that say how TFLite fused an op, not where it sits in the network.
_FUSION_PARTS = {"Relu6", "Relu", "add_fold", "Conv2D_Fold", "depthwise_Fold", "BatchNorm_Fold", "BiasAdd", "Conv2D"}


def layer_name(tensor_name: str) -> str:
    """A Keras layer name from a TFLite output tensor name: its scope, without the model prefix and the fusions.

    ``"MobilenetV2/expanded_conv_16/project/add_fold;..."`` -> ``"expanded_conv_16_project"``,
    ``"MobilenetV1/MobilenetV1/Conv2d_13_pointwise/Relu6;..."`` -> ``"Conv2d_13_pointwise"``,
    ``"MobilenetV2/expanded_conv_15/add"`` -> ``"expanded_conv_15_add"``.
    """
    parts = [p for p in tensor_name.split(";")[0].split("/") if p]
    while parts and parts[0].startswith("Mobilenet"):
        parts = parts[1:]
    while len(parts) > 1 and parts[-1] in _FUSION_PARTS:
        parts = parts[:-1]
    return "_".join(parts) or "layer"


def _dequantise(values: np.ndarray, quantization: dict[str, Any]) -> np.ndarray:
    """``(q - zero_point) x scale``, per tensor or per channel (along ``quantized_dimension``)."""
    scales = np.asarray(quantization["scales"], dtype=np.float64)
    zeros = np.asarray(quantization["zero_points"], dtype=np.float64)
    if scales.size == 0:  # a float tensor
        return np.asarray(values, dtype=np.float32)
    if scales.size > 1:
        shape = [1] * values.ndim
        shape[int(quantization["quantized_dimension"])] = -1
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return ((values.astype(np.float64) - zeros) * scales).astype(np.float32)


def _is_relu6(quantization: dict[str, Any], name: str) -> bool:
    """Whether an op's output is clamped to [0, 6]: its name says Relu6, or its uint8 range is exactly [0, 6]."""
    if name.split(";")[0].endswith("Relu6"):
        return True
    scales, zeros = quantization["scales"], quantization["zero_points"]
    return len(scales) == 1 and int(zeros[0]) == 0 and abs(float(scales[0]) * 255.0 - 6.0) < 1e-4


def float_model_from_tflite(path: str | Path, *, until: str | None = None, input_size: int = 224, name: str) -> Any:
    """Rebuild a quantised TFLite MobileNet as a float Keras model ``scaled pixels -> pooled vector``.

    Args:
        path: The ``.tflite`` file.
        until: Name of the tensor that ends the model (the global average pool, e.g.
            ``"MobilenetV2/Logits/AvgPool"``); None: the graph's first ``AVERAGE_POOL_2D``.
        input_size: Input side in pixels (any multiple of 32; the pool becomes a global average).
        name: The Keras model's name.

    Returns:
        A ``keras.Model`` ``(None, s, s, 3)`` in [-1, 1] (see ``TFLITE_FLOAT_SCALING``) -> ``(None, channels)``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The graph has an operation this rebuild does not know before ``until``, or no such tensor.
    """
    import keras
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TFLite model not found: {path}")
    # Without the default delegate: XNNPACK would replace the graph's operations by one DELEGATE node.
    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    graph_input = interpreter.get_input_details()[0]["index"]
    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    values: dict[int, Any] = {graph_input: inputs}
    used: set[str] = set()

    def unique(base: str) -> str:
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        return candidate

    for op in interpreter._get_ops_details():  # noqa: SLF001  (the interpreter's public API has no graph walk)
        kind = op["op_name"]
        out_index = int(op["outputs"][0])
        out = tensors[out_index]
        if kind not in _SUPPORTED:
            raise ValueError(f"{path.name}: operation {kind} ({out['name']}) cannot be rebuilt as a float layer")
        x = values[int(op["inputs"][0])]
        label = unique(layer_name(out["name"]))
        if kind == "AVERAGE_POOL_2D":
            pooled = keras.layers.GlobalAveragePooling2D(name=label)(x)
            if until is None or out["name"] == until:
                return keras.Model(inputs, pooled, name=name)
            values[out_index] = keras.layers.Reshape((1, 1, -1))(pooled)
            continue
        if kind == "ADD":
            values[out_index] = keras.layers.Add(name=label)([x, values[int(op["inputs"][1])]])
            continue
        layer, kernel, bias = _convolution(kind, op, tensors, interpreter, label)
        y = layer(x)
        layer.set_weights([kernel, bias])
        values[out_index] = y
    raise ValueError(f"{path.name}: no average pool {'named ' + until if until else ''} in the graph")


def _convolution(kind: str, op: dict[str, Any], tensors: dict[int, Any], interpreter: Any, label: str) -> Any:
    """The Keras layer of one TFLite (depthwise) convolution and its dequantised ``(kernel, bias)``."""
    import keras

    out = tensors[int(op["outputs"][0])]
    weight_t = tensors[int(op["inputs"][1])]
    weights = _dequantise(interpreter.get_tensor(weight_t["index"]), weight_t["quantization_parameters"])
    if len(op["inputs"]) > 2 and int(op["inputs"][2]) >= 0:
        bias_t = tensors[int(op["inputs"][2])]
        bias = _dequantise(interpreter.get_tensor(bias_t["index"]), bias_t["quantization_parameters"])
    else:  # a convolution without a bias
        bias = np.zeros(int(out["shape"][-1]), dtype=np.float32)
    in_side, out_side = int(tensors[int(op["inputs"][0])]["shape"][1]), int(out["shape"][1])
    stride = max(1, round(in_side / out_side))
    activation = "relu6" if _is_relu6(out["quantization_parameters"], out["name"]) else None
    if kind == "CONV_2D":  # TFLite [out, kh, kw, in] -> Keras [kh, kw, in, out]
        layer = keras.layers.Conv2D(
            weights.shape[0], weights.shape[1:3], strides=stride, padding="same", activation=activation, name=label
        )
        kernel = np.transpose(weights, (1, 2, 3, 0))
    else:  # DEPTHWISE_CONV_2D: TFLite [1, kh, kw, in x multiplier] -> Keras [kh, kw, in, multiplier]
        channels = int(tensors[int(op["inputs"][0])]["shape"][3])
        layer = keras.layers.DepthwiseConv2D(
            weights.shape[1:3],
            strides=stride,
            padding="same",
            depth_multiplier=weights.shape[3] // channels,
            activation=activation,
            name=label,
        )
        kernel = weights.reshape(weights.shape[1], weights.shape[2], channels, weights.shape[3] // channels)
    return layer, kernel, bias
