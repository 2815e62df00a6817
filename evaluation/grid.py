"""Parsing of the command-line forms of an LSH parameter grid (``lsh_sweep --grid``)."""

from __future__ import annotations

import itertools
import re

_PAIR = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_AXIS = re.compile(r"^\s*([LK])\s*=\s*([\d,\s]+)$")


def parse_int_list(text: str, *, name: str, minimum: int = 0) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; raises ValueError naming ``name`` and the bad value."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < minimum:
            raise ValueError(f"{name}: {part!r} is not an integer >= {minimum}")
        values.append(int(part))
    if not values:
        raise ValueError(f"{name}: no values in {text!r}")
    return list(dict.fromkeys(values))


def parse_grid(text: str) -> list[tuple[int, int]]:
    """Parse an (L, K) grid.

    Two forms: ``"L=3,4,5 K=1,2"`` (the cartesian product, L-major) or explicit pairs ``"3x6,7x2"``
    (L x K). Pairs keep their order; duplicates are dropped.
    """
    text = text.strip()
    if not text:
        raise ValueError("grid: empty")
    pairs: list[tuple[int, int]]
    if "=" in text:
        axes: dict[str, list[int]] = {}
        for chunk in re.split(r"\s+(?=[LK]\s*=)", text):
            match = _AXIS.match(chunk)
            if match is None:
                raise ValueError(f"grid: cannot parse {chunk!r}; expected e.g. 'L=3,4,5 K=1,2' or '3x6,7x2'")
            axes[match.group(1)] = parse_int_list(match.group(2), name=f"grid {match.group(1)}", minimum=1)
        if set(axes) != {"L", "K"}:
            raise ValueError(f"grid: {text!r} needs both L=... and K=...")
        pairs = list(itertools.product(axes["L"], axes["K"]))
    else:
        pairs = []
        for chunk in text.split(","):
            match = _PAIR.match(chunk)
            if match is None:
                raise ValueError(f"grid: cannot parse {chunk.strip()!r}; expected LxK pairs like '3x6,7x2'")
            num_tables, hashes = int(match.group(1)), int(match.group(2))
            if num_tables < 1 or hashes < 1:
                raise ValueError(f"grid: {chunk.strip()!r} needs L >= 1 and K >= 1")
            pairs.append((num_tables, hashes))
    return list(dict.fromkeys(pairs))
