"""Sketch -> photo search through the product: a served joint extractor, its LSH index, ``domain=photo``.

``manage.py evaluate --cross-domain`` measures the joint head on files; this script checks that the product serves
the same thing: the stored Feature rows of the joint extractor (sketch branch for the sketch collection, photo
branch for the photo collection), the LSH index over both, and ``sketch_search(domain="photo")``.

Queries and galleries follow the evaluation: the unseen (held-out) classes stored with the extractor, and, in the
seen classes, the last ``--holdout`` sketches by file name; each split is scored against the photos of its own
classes. For the exact scan and for each ``--probes`` value of the index: mAP@all (a relevant photo the index
never returned counts 0), P@100, instance recall@1/@10 (the photo the sketch was drawn from), IE over the whole
index (sketches + photos), and the p50 latency of ``sketch_search`` (query by example, so without the CNN).

Prerequisites (README, "Beyond the paper"), with any DATABASE_URL::

    manage.py evaluate --cross-domain --save-extractor sketchy-joint
    manage.py import_collection ../shared/data/sketchy-125/sketch --name sketchy-sketches --kind sketches
    manage.py import_collection ../shared/data/sketchy-125/photo --name sketchy-photos --kind photos --labels
    manage.py extract_features --extractor sketchy-joint --collection sketchy-sketches --collection sketchy-photos
    manage.py build_index --extractor sketchy-joint --family binary --L 8 --K 8 --center --name sketchy

    .venv/bin/python benchmarks/cross_domain_search.py --index-name sketchy --probes 0,2,8
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sketchsite.settings")
    import django

    django.setup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-name", default="sketchy", help="LSH index name (its active version is used)")
    parser.add_argument("--sketches", default="sketchy-sketches", help="sketch collection")
    parser.add_argument("--photos", default="sketchy-photos", help="photo collection")
    parser.add_argument("--probes", default="0,2,8", help="comma-separated multi-probe values")
    parser.add_argument("--holdout", type=int, default=5, help="seen-class queries per class (last by file name)")
    parser.add_argument("--timed", type=int, default=200, help="queries timed through sketch_search")
    args = parser.parse_args()
    setup_django()

    from evaluation.crossdomain import cross_domain_metrics
    from indexing.models import Collection, Image, LSHIndex
    from indexing.selectors import features_load
    from indexing.services.search import sketch_search
    from indexing.serving import index_cache

    index = (
        LSHIndex.objects.select_related("extractor")
        .filter(name=args.index_name, is_active=True)
        .order_by("-version")
        .first()
    )
    if index is None:
        raise SystemExit(f"no active index named {args.index_name!r}: run build_index --name {args.index_name}")
    extractor = index.extractor
    unseen = set((extractor.details or {}).get("unseen_classes") or [])
    if not unseen:
        print(f"note: extractor {extractor.name} records no held-out classes; every class counts as seen")
    loaded = index_cache.get(index)
    matrix = features_load(extractor=extractor, collection_ids=list(index.collections.values_list("id", flat=True)))
    sketch_collection = Collection.objects.get(name=args.sketches)
    photo_collection = Collection.objects.get(name=args.photos)

    def rows_of(collection: Collection) -> list[tuple[int, str, str]]:
        return list(Image.objects.filter(collection=collection).values_list("pk", "label", "original_name"))

    sketches, photos = rows_of(sketch_collection), rows_of(photo_collection)
    photo_by_name = {(label, Path(name).stem): pk for pk, label, name in photos}
    queries: dict[str, list[tuple[int, str, int]]] = {"unseen": [], "seen": []}
    by_class: dict[str, list[tuple[int, str]]] = {}
    for pk, label, name in sketches:
        by_class.setdefault(label, []).append((pk, name))
    for label, items in by_class.items():
        items.sort(key=lambda item: Path(item[1]).name)
        chosen = items if label in unseen else items[-args.holdout :]
        for pk, name in chosen:
            own = photo_by_name.get((label, Path(name).stem.rsplit("-", 1)[0]), -1)
            queries["unseen" if label in unseen else "seen"].append((pk, label, own))

    probes = [int(p) for p in args.probes.split(",") if p.strip()]
    photo_ids = np.array(sorted(pk for pk, _, _ in photos), dtype=np.int64)
    photo_label = {pk: label for pk, label, _ in photos}
    print(
        f"index {index.pk} ({index.family} L={index.num_tables} K={index.hashes_per_table} center="
        f"{index.center is not None}) over {matrix.image_ids.shape[0]} images, extractor {extractor.name}; "
        f"queries: {len(queries['unseen'])} unseen-class, {len(queries['seen'])} seen-class sketches"
    )
    header = "| split | method | probes | mAP@all | P@100 | inst R@1 | inst R@10 | IE | search p50 ms |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for split, items in queries.items():
        if not items:
            continue
        classes = {label for _, label, _ in items}
        gallery_ids = np.array([pk for pk in photo_ids if photo_label[int(pk)] in classes], dtype=np.int64)
        gallery_rows = matrix.rows(gallery_ids)
        gallery_vectors = matrix.vectors[gallery_rows]
        gallery_labels = matrix.labels[gallery_rows]
        position = {int(pk): i for i, pk in enumerate(matrix.image_ids[gallery_rows])}
        q_rows = matrix.rows(np.array([pk for pk, _, _ in items], dtype=np.int64))
        q_vectors = matrix.vectors[q_rows]
        q_labels = np.array([label for _, label, _ in items])
        own = np.array([position.get(o, -1) for _, _, o in items], dtype=np.int64)
        scan = cross_domain_metrics(q_vectors, q_labels, own, gallery_vectors, gallery_labels)
        lines.append(
            f"| {split} | scan | - | {scan['map']:.4f} | {scan['p@100']:.4f} | {scan['inst_r@1']:.4f} | "
            f"{scan['inst_r@10']:.4f} | 1.0 | - |"
        )
        for p in probes:
            # Candidates of each query from the index (hash + ONE SQL statement), kept if they are gallery photos;
            # a gallery photo the index did not return is pushed below every returned one (scored -inf).
            sims = np.full((len(items), len(gallery_rows)), -np.inf, dtype=np.float32)
            scored = 0
            for i, vector in enumerate(q_vectors):
                found = loaded.lsh.candidates(vector, p).ids
                scored += len(found)
                hits = [position[int(pk)] for pk in found if int(pk) in position]
                sims[i, hits] = gallery_vectors[hits] @ vector
            metrics = _metrics_from_scores(sims, q_labels, own, gallery_labels)
            timed = [pk for pk, _, _ in items][: args.timed]
            seconds = []
            for pk in timed:
                start = time.perf_counter()
                sketch_search(image_id=pk, index=index, top_k=100, probes=p, domain="photo")
                seconds.append(time.perf_counter() - start)
            ie = matrix.image_ids.shape[0] * len(items) / max(scored, 1)
            lines.append(
                f"| {split} | index | {p} | {metrics['map']:.4f} | {metrics['p@100']:.4f} | "
                f"{metrics['inst_r@1']:.4f} | {metrics['inst_r@10']:.4f} | {ie:.1f} | "
                f"{np.percentile(seconds, 50) * 1000:.1f} |"
            )
    print("\n".join(lines))
    return 0


def _metrics_from_scores(
    sims: np.ndarray, q_labels: np.ndarray, own: np.ndarray, gallery_labels: np.ndarray
) -> dict[str, float]:
    from evaluation.metrics import average_precision_from_ranking

    order = np.argsort(-sims, axis=1, kind="stable")
    returned = np.take_along_axis(np.isfinite(sims), order, axis=1)
    relevance = (gallery_labels[order] == q_labels[:, None]) & returned
    totals = (gallery_labels[None, :] == q_labels[:, None]).sum(axis=1).astype(np.int64)
    ap = average_precision_from_ranking(relevance, totals)
    rank = np.full(len(own), sims.shape[1], dtype=np.int64)
    for i, o in enumerate(own):
        if o >= 0 and np.isfinite(sims[i, o]):
            rank[i] = int(np.argmax(order[i] == o))
    return {
        "map": float(ap.mean()),
        "p@100": float(relevance[:, :100].sum(axis=1).mean() / 100),
        "inst_r@1": float((rank < 1).mean()),
        "inst_r@10": float((rank < 10).mean()),
    }


if __name__ == "__main__":
    raise SystemExit(main())
