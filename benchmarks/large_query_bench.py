"""What a large query image costs to decode, check for blankness and preprocess, before and after issue 16.

Builds a few large drawings (thick black strokes on a transparent or white background, as a big canvas or a
phone photo of a sketch would send) and runs, each in a fresh subprocess so that the peak RSS
(``resource.getrusage``) is its own, either the old query path (``load_image`` at full size, import cap) or the
current one (``load_image`` under the query pixel cap, shrunk towards ``QUERY_DECODE_SIDE`` while decoding, then
``is_blank``), followed by ``preprocess_sketch`` to the model's 224 px.

Usage::

    .venv/bin/python benchmarks/large_query_bench.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUERY_MAX_PIXELS = 4096 * 4096  # sketchsite/settings.py SKETCHSEARCH_QUERY_MAX_PIXELS default


def make_images(folder: Path) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    def drawing(mode: str, width: int, height: int) -> Image.Image:
        img = Image.new(mode, (width, height), (0, 0, 0, 0) if mode == "RGBA" else "white")
        draw = ImageDraw.Draw(img)
        rng = np.random.default_rng(0)
        ink = (0, 0, 0, 255) if mode == "RGBA" else "black"
        for _ in range(12):
            points = [tuple(int(v) for v in rng.integers(0, min(width, height), 2)) for _ in range(5)]
            draw.line(points, fill=ink, width=24)
        return img

    specs = [("RGBA", 6300, 6300, "png"), ("RGBA", 4096, 4096, "png"), ("RGB", 4000, 3000, "jpg")]
    for mode, width, height, ext in specs:
        img = drawing(mode, width, height)
        path = folder / f"{mode.lower()}-{width}x{height}.{ext}"
        img.save(path, quality=90) if ext == "jpg" else img.save(path)


def measure(path: str, variant: str) -> None:
    sys.path.insert(0, str(ROOT))
    from indexing.features import preprocess as pp

    data = Path(path).read_bytes()
    start = time.perf_counter()
    try:
        if variant == "before":
            img = pp.load_image(data)
        else:
            img = pp.load_image(data, max_pixels=QUERY_MAX_PIXELS, max_side=pp.QUERY_DECODE_SIDE)
            pp.is_blank(img)
        pp.preprocess_sketch(img, 224)
        outcome = f"decoded to {img.size[0]} x {img.size[1]}"
    except pp.ImageDecodeError:
        outcome = "refused (400): over the query pixel cap"
    ms = 1000 * (time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size_kb = len(data) / 1024
    print(f"| {Path(path).name} ({size_kb:,.0f} KB) | {variant} | {ms:,.0f} ms | {peak_mb:,.0f} MB | {outcome} |")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make":
        make_images(Path(sys.argv[2]))
        return
    if len(sys.argv) == 3:
        measure(sys.argv[1], sys.argv[2])
        return
    print("| image | path | decode + blank + preprocess | peak RSS | outcome |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        # Every step in its own process: Linux carries a parent's peak RSS over fork and exec.
        subprocess.run([sys.executable, __file__, "--make", tmp], check=True)
        for path in sorted(Path(tmp).iterdir(), key=lambda p: -p.stat().st_size):
            for variant in ("before", "after"):
                subprocess.run([sys.executable, __file__, str(path), variant], check=True)


if __name__ == "__main__":
    main()
