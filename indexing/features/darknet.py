"""Darknet-Tiny rebuilt in Keras 3 from its TF.js layers files (the ``darknet_tiny`` backbone's network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexing.features.runtimes import WeightsUnavailableError

if TYPE_CHECKING:
    import keras

__all__ = ["build_darknet_tiny"]


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
