"""What a stranger's drawing gets from what `make run` serves: Quick, Draw! drawings through POST /api/search/.

The drawings are the Quick, Draw! fold the shipped sketch head never trained on (its file's ``hold_out_fold``,
3 per word), of the words that name a class of the served gallery. Each is drawn as the drawing page draws it
(512-pixel canvas, the default 6-pixel pen), whole and cut after 25/50/75% of its strokes (what live search sends
while someone draws), and posted as a PNG data URL with the API's defaults (default index, its tuned probes,
k = 10), then again with ``scan: true`` (the exact scan). A result is relevant when its label names the drawing's
word (case, spaces, ``-`` and ``_`` aside: "wine bottle" is "wine-bottle"; "light bulb" is "lightbulb").

    .venv/bin/python benchmarks/served_relevance.py           # the database of make run (or DATABASE_URL)
    .venv/bin/python benchmarks/served_relevance.py --pen 12  # as drawn with the page's stroke width set to 12

Needs `make run` (or setup_demo) once. Prints a table and, last, one line:
`served relevance: p@10 0.71, hit@1 0.72 (whole drawings, default index; scan 0.72 / 0.73; at 50% of the strokes
0.57 = 0.80 x)`.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sketchsite.settings")
os.environ["SEARCH_THROTTLE_RATE"] = "1000000/minute"  # this process is one client sending many searches
QUICKDRAW = ROOT.parent / "shared" / "data" / "quickdraw-344"
STAGES = (("whole", 1.0), ("75%", 0.75), ("50%", 0.5), ("25%", 0.25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quickdraw", type=Path, default=QUICKDRAW)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--canvas", type=int, default=None, help="render on a canvas this wide (default: the page's)")
    parser.add_argument("--pen", type=float, default=None, help="pen width in canvas pixels (default: the page's)")
    args = parser.parse_args()
    if not args.quickdraw.is_dir():
        sys.exit(f"no Quick, Draw! drawings at {args.quickdraw} (see ../shared/data/README.md): nothing measured")

    import django

    django.setup()
    from django.test import Client

    from evaluation.protocol_maths import label_key
    from indexing.features.augment import PAGE_CANVAS, PAGE_PEN_WIDTH
    from indexing.features.quickdraw import cut_strokes, read_folder, render_strokes
    from indexing.features.sketch_head import quickdraw_folds
    from indexing.models import Image
    from indexing.selectors import index_get_default

    index = index_get_default()
    if index is None:
        sys.exit("no active index: run `make run` (or manage.py setup_demo) first")
    details = index.extractor.details or {}
    held_out = (details.get("training") or {}).get("hold_out_fold")
    if held_out is None or held_out < 0:
        print(
            f"the served extractor {index.extractor.name} names no held-out Quick, Draw! fold: using fold 0, "
            "which it MAY have trained on"
        )
        held_out = 0
    gallery_classes = {
        label_key(label)
        for label in Image.objects.filter(collection__in=index.collections.all())
        .values_list("label", flat=True)
        .distinct()
    }
    drawings = list(read_folder(args.quickdraw))
    folds = quickdraw_folds(drawings)
    queries = [
        d for d, f in zip(drawings, folds, strict=True) if f == held_out and label_key(d.word) in gallery_classes
    ]
    print(
        f"index {index} (id {index.pk}), extractor {index.extractor.name}, probes {index.probes}; "
        f"{len(queries)} Quick, Draw! drawings of fold {held_out} ({len({d.word for d in queries})} words)"
    )
    canvas = args.canvas or PAGE_CANVAS
    pen = args.pen or PAGE_PEN_WIDTH
    if (canvas, pen) != (PAGE_CANVAS, PAGE_PEN_WIDTH):
        print(f"drawn on a {canvas}-pixel canvas, {pen:g}-pixel pen (the page's: {PAGE_CANVAS}, {PAGE_PEN_WIDTH:g})")
    client = Client(HTTP_HOST="127.0.0.1")
    table: dict[tuple[str, str], tuple[float, float, float]] = {}
    for stage, fraction in STAGES:
        for mode in ("default index", "exact scan"):
            precision, first, millis = [], [], []
            for drawing in queries:
                buffer = io.BytesIO()
                drawn = render_strokes(cut_strokes(drawing.strokes, fraction), size=canvas, width=pen)
                drawn.save(buffer, format="PNG")
                body = {"image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), "k": args.k}
                if mode == "exact scan":
                    body["scan"] = True
                started = time.perf_counter()
                response = client.post("/api/search/", body, content_type="application/json")
                millis.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    sys.exit(f"search answered {response.status_code}: {response.content[:300]!r}")
                labels = [label_key(hit["label"]) for hit in response.json()["results"]]
                relevant = [label == label_key(drawing.word) for label in labels]
                precision.append(sum(relevant[:10]) / 10)
                first.append(bool(relevant[:1] and relevant[0]))
            table[(stage, mode)] = (float(np.mean(precision)), float(np.mean(first)), float(np.median(millis)))
    print("\n| strokes | search | p@10 | hit@1 | p50 ms (API, in process) |\n|---|---|---|---|---|")
    for (stage, mode), (p10, hit1, ms) in table.items():
        print(f"| {stage} | {mode} | {p10:.3f} | {hit1:.3f} | {ms:.1f} |")
    whole, scan, half = (
        table[("whole", "default index")],
        table[("whole", "exact scan")],
        table[("50%", "default index")],
    )
    print(
        f"\nserved relevance: p@10 {whole[0]:.2f}, hit@1 {whole[1]:.2f} (whole drawings, default index; "
        f"scan {scan[0]:.2f} / {scan[1]:.2f}; index/scan p@10 {whole[0] / max(scan[0], 1e-9):.2f} x; "
        f"at 50% of the strokes {half[0]:.2f} = {half[0] / max(whole[0], 1e-9):.2f} x)"
    )


if __name__ == "__main__":
    main()
