"""What the look tie-break changes: Sketchy sketches of one photo found first among the sketches of their class.

The served sketch head retrieves by class probabilities, so every sketch of the class a drawing is recognised as
scores about 1 and their order says little. The search orders the k hits it shows by
``(1 - w) * class cosine + w * base cosine`` (``SKETCHSEARCH_LOOK_WEIGHT``, w = 0.02 served). Sketchy-125
has what measures that order: each of its sketches was drawn from one photo, by 5-8 people per photo, so the other
sketches of the same photo (same pose, same view) are the ones that look like it. Each of the 3,125 sketches is a
query against the 3,124 others, with the served vectors (the shipped head over ``mobilenet_v1v2``, thinned
strokes) and the served ranking function (``indexing.lsh.scan.look_tie_break``, through ``evaluation.protocols.Look``
as ``evaluate_relevance`` applies it; exact scan, k = 10), in memory; ``tests/search/test_look_tiebreak.py`` checks
that the served search ranks as this function does.

Printed per group: the 26 Sketchy classes that are gallery classes the head was trained on (TU-Berlin-40, never
on Sketchy) and the other 99, which the head does not know. Same photo: mAP (over the whole ranking), p@5 and hit@1
(the first result is a sketch of the same photo); same class: p@10. Last, the 26 classes' sketches against the
3,200 TU-Berlin-40 sketches (p@10 / hit@1 of the class; the shipped head trained on all of TU-Berlin-40, so this is
not the cross-data-set protocol's figure, only the look's effect on it).

    .venv/bin/python benchmarks/look_tiebreak.py
    .venv/bin/python benchmarks/look_tiebreak.py --sheet docs/look-tiebreak.png  # and a picture from make run's demo
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sketchsite.settings")
DATA = ROOT.parent / "shared" / "data"
K = 10
PAGE_K = 24  # the drawing page's default number of hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sketchy", type=Path, default=DATA / "sketchy-125" / "sketch")
    parser.add_argument("--tu-berlin", type=Path, default=DATA / "tu-berlin-40")
    parser.add_argument(
        "--sheet", type=Path, help="also write the demo's first hits for three sketches, without / with"
    )
    args = parser.parse_args()
    if not args.sketchy.is_dir():
        sys.exit(f"no Sketchy sketches at {args.sketchy} (see ../shared/data/README.md): nothing measured")

    import django

    django.setup()
    from django.conf import settings

    from evaluation.metrics import average_precision_from_ranking
    from evaluation.protocol_maths import label_key
    from evaluation.protocols import Look
    from indexing.features.backbones import load_backbone
    from indexing.features.heads import HeadBackbone
    from indexing.features.preprocess import load_image, preprocess_sketch
    from indexing.features.sketch_head import RETRIEVAL_LAYER, SHIPPED_HEAD, load_head_file, tu_berlin_files

    weight = float(settings.SKETCHSEARCH_LOOK_WEIGHT)
    head, classes, meta = load_head_file(SHIPPED_HEAD)
    base = load_backbone(str(meta.get("backbone") or "mobilenet_v1"))
    served = HeadBackbone(base, head, name="shipped", layer=RETRIEVAL_LAYER)
    thin = bool(meta.get("sketch_thin"))

    def embed(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        looks = []
        for start in range(0, len(files), 64):
            pixels = np.stack(
                [preprocess_sketch(load_image(f), base.input_size, thin=thin) for f in files[start : start + 64]]
            )
            looks.append(np.asarray(base.embed(pixels), dtype=np.float32))
        look = np.concatenate(looks)
        return served.embed_features(look), look

    started = time.perf_counter()
    files = sorted(args.sketchy.glob("*/*.png"))
    vectors, looks = embed(files)
    sketch_class = np.array([label_key(f.parent.name) for f in files])
    photo = np.array([f"{f.parent.name}/{f.stem.rsplit('-', 1)[0]}" for f in files])
    print(
        f"{len(files)} Sketchy sketches of {len(set(photo))} photos embedded in {time.perf_counter() - started:.0f} s"
    )
    known = {label_key(c) for c in classes}
    shared = np.array([c in known for c in sketch_class])
    margin = K  # a search orders the k hits it shows

    def ranked(q: int, g_vec: np.ndarray, g_look: np.ndarray, w: float, skip: int | None) -> np.ndarray:
        scores = g_vec @ vectors[q]
        if skip is not None:
            scores[skip] = -np.inf
        order = np.lexsort((np.arange(len(scores)), -scores))[: len(scores) - (skip is not None)]
        return Look(looks, g_look, w, margin).reorder(q, order, scores[order]) if w > 0 else order

    def within(mask: np.ndarray, w: float) -> dict[str, float]:
        aps, p5, hit1, p10 = [], [], [], []
        for q in np.flatnonzero(mask):
            order = ranked(int(q), vectors, looks, w, int(q))
            same = photo[order] == photo[q]
            aps.append(average_precision_from_ranking(same[np.newaxis], np.array([max(int(same.sum()), 1)]))[0])
            p5.append(same[:5].mean())
            hit1.append(same[0])
            p10.append((sketch_class[order[:10]] == sketch_class[q]).mean())
        return {"mAP": np.mean(aps), "p@5": np.mean(p5), "hit@1": np.mean(hit1), "class p@10": np.mean(p10)}

    print(
        f"\nSame photo among the other Sketchy sketches (k = {K}, the look orders those {margin} hits; "
        f"w = {weight:g} served)"
    )
    print("| classes | look weight | same-photo mAP | same-photo p@5 | same-photo hit@1 | same-class p@10 |")
    print("|---|---|---|---|---|---|")
    results = {}
    for name, mask in (("26 the head knows", shared), ("99 it does not", ~shared)):
        for w in (0.0, weight):
            r = within(mask, w)
            results[(name, w)] = r
            print(f"| {name} | {w:g} | {r['mAP']:.3f} | {r['p@5']:.3f} | {r['hit@1']:.3f} | {r['class p@10']:.3f} |")
    cross = {}
    if args.tu_berlin.is_dir():
        tu = tu_berlin_files(args.tu_berlin)
        g_vec, g_look = embed([f for f, _ in tu])
        g_class = np.array([label_key(c) for _, c in tu])
        for w in (0.0, weight):
            rel = [
                g_class[ranked(int(q), g_vec, g_look, w, None)[:10]] == sketch_class[q] for q in np.flatnonzero(shared)
            ]
            cross[w] = (float(np.mean([r.mean() for r in rel])), float(np.mean([r[0] for r in rel])))
        print(
            f"\nThe 26 classes against TU-Berlin-40 ({len(tu)} sketches; the head trained on them, so this is not "
            "the protocol's figure)"
        )
        for w, (p10, hit1) in cross.items():
            print(f"look weight {w:g}: class p@10 {p10:.3f}, hit@1 {hit1:.3f}")
    before, after = results[("26 the head knows", 0.0)], results[("26 the head knows", weight)]
    tail = f"; class p@10 against TU-Berlin {cross[0.0][0]:.3f} -> {cross[weight][0]:.3f}" if cross else ""
    print(
        f"\nlook tie-break (w {weight:g}), the 26 known classes: same-photo hit@1 {before['hit@1']:.3f} -> "
        f"{after['hit@1']:.3f}, mAP {before['mAP']:.3f} -> {after['mAP']:.3f}; same-class p@10 "
        f"{before['class p@10']:.3f} -> {after['class p@10']:.3f}{tail}"
    )
    if args.sheet:
        write_sheet(args.sheet, weight)


def write_sheet(path: Path, weight: float) -> None:
    """The first 8 of the page's 24 hits for three demo sketches (per query: look off above, served below)."""
    from django.conf import settings
    from PIL import Image as PILImage
    from PIL import ImageDraw

    from indexing.models import Image
    from indexing.services.search import sketch_search

    rows = []
    for label, nth in (("cat", 10), ("bicycle", 5), ("tree", 7)):
        query = Image.objects.filter(label=label).order_by("pk")[nth]
        for w in (0.0, weight):
            settings.SKETCHSEARCH_LOOK_WEIGHT = w
            hits = sketch_search(image_id=query.pk, top_k=PAGE_K).hits[:8]
            rows.append((w, [query] + [Image.objects.get(pk=hit.image_id) for hit in hits]))
    settings.SKETCHSEARCH_LOOK_WEIGHT = weight
    cell, gap = 96, 24
    sheet = PILImage.new("L", (9 * cell + gap + 130, len(rows) * cell), 255)
    draw = ImageDraw.Draw(sheet)
    for y, (w, images) in enumerate(rows):
        draw.text((4, y * cell + cell // 2 - 6), "look off" if w == 0 else f"look {w:g}", fill=0)
        for x, image in enumerate(images):
            tile = PILImage.open(image.file.path).convert("L").resize((cell - 6, cell - 6))
            sheet.paste(tile, (130 + x * cell + (gap if x else 0), y * cell + 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    print(f"wrote {path}: per row the query, then the first 8 of its {PAGE_K} hits (the demo's default index)")


if __name__ == "__main__":
    main()
