"""The relevance protocols with normalised strokes: every sketch thinned to one-pixel lines before the backbone.

A TU-Berlin sketch reaches the backbone as faint grey lines, a Quick, Draw! drawing drawn on the page as black
strokes ~3 px wide, a Sketchy sketch as dense black ones (the ink of a 224-pixel cat: 1.3%, 9.3% and 11.4% of the
pixels). ``preprocess_sketch(..., thin=True)`` binarises and thins every sketch (``thin_strokes``) before the usual
one-pixel thickening, so all of them, whatever the pen, look alike. This runs ``manage.py evaluate_relevance``
(same folds, same head recipe, heads retrained per fold) with that preprocessing for every sketch (training views,
queries, gallery; photos are unchanged), with its own embedding caches. It changes nothing that is served.

    .venv/bin/python benchmarks/stroke_normalisation.py                    # all three protocols, ~20 min here
    .venv/bin/python benchmarks/stroke_normalisation.py --skip within      # the arguments of evaluate_relevance
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sketchsite.settings")


def main() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    import indexing.features.pipeline
    import indexing.features.preprocess
    import indexing.features.sketch_head
    import indexing.services.search

    thinned = functools.partial(indexing.features.preprocess.preprocess_sketch, thin=True)
    for module in (
        indexing.features.preprocess,
        indexing.features.pipeline,
        indexing.features.sketch_head,
        indexing.services.search,
    ):
        module.preprocess_sketch = thinned  # type: ignore[attr-defined]
    cache = ROOT / "var" / "cache" / "thin-strokes"
    print(f"sketches thinned before the backbone (preprocess_sketch(thin=True)); embedding caches in {cache}")
    call_command("evaluate_relevance", "--cache", str(cache), *sys.argv[1:])


if __name__ == "__main__":
    main()
