from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw
from pytest_django.fixtures import Settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEMO_DATA = Path(__file__).resolve().parents[1] / "data" / "demo"


@pytest.fixture(autouse=True)
def _media_root(settings: Settings, tmp_path: Path) -> None:
    # Every test writes its files into its own folder, never into var/media.
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SKETCHSEARCH_VECTOR_DIR = tmp_path / "vectors"


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Run queued tasks in-process for one test, whatever broker this run is configured with."""
    from sketchsite.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = previous


def redis_reachable(url: str) -> bool:
    """Whether a Redis server answers at ``url`` (tests that need a real broker skip otherwise)."""
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def sketch_png(seed: int, size: int = 64, *, strokes: int = 3) -> bytes:
    """A small random line drawing (black strokes on white), as PNG bytes."""
    rng = np.random.default_rng(seed)
    img = PILImage.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    for _ in range(strokes):
        points = [tuple(int(v) for v in rng.integers(4, size - 4, 2)) for _ in range(4)]
        draw.line(points, fill=0, width=2)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def write_tu_berlin(root: Path, classes: dict[str, list[int]], *, layout: str = "tu-berlin") -> Path:
    """Write a tiny dataset: TU-Berlin layout root/png/<class>/<id>.png, or root/<class>/<id>.png."""
    base = root / "png" if layout == "tu-berlin" else root
    for class_index, (label, ids) in enumerate(classes.items()):
        (base / label).mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            (base / label / f"{image_id}.png").write_bytes(sketch_png(class_index * 1000 + image_id))
    return root
