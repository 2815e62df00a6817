from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from indexing.features.backbones import available_backbones
from indexing.features.training import STRATEGIES


class Command(BaseCommand):
    help = (
        "Train one of the paper's Models 1-5 on a collection over a base backbone and store it as an Extractor "
        "(weights under MEDIA_ROOT/extractors/). mobilenet_v1 (TFLite) supports --strategy head-only only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--collection", required=True, help="labelled collection with train and test splits")
        parser.add_argument(
            "--backbone",
            required=True,
            help=f"base: a registered backbone ({', '.join(available_backbones())}) or a head-less extractor's name",
        )
        parser.add_argument("--model", type=int, required=True, help="the paper's model number, 1..5 (3 = siamese)")
        parser.add_argument("--strategy", default="head-only", help=f"{' | '.join(STRATEGIES)} (default head-only)")
        parser.add_argument("--epochs", type=int, default=30, help="most epochs of head training (early stopping)")
        parser.add_argument("--fine-tune-epochs", type=int, default=None, help="most epochs of phase 2 (epochs/3)")
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--val-fraction", type=float, default=0.1, help="share of train held out per class")
        parser.add_argument("--name", default=None, help="extractor name (default <base>-model<N>[-<strategy>])")
        parser.add_argument("--layer", default=None, help="retrieval layer (default the last hidden layer)")
        parser.add_argument("--train-per-class", type=int, default=None, help="subset: first N train images per class")
        parser.add_argument("--test-per-class", type=int, default=None, help="subset: first N test images per class")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--replace", "--force", action="store_true", help="overwrite an extractor of the same name")

    def handle(self, *args: Any, **options: Any) -> None:
        from indexing.services.training import TrainingError, extractor_train

        try:
            report = extractor_train(
                collection_name=options["collection"],
                backbone=options["backbone"],
                model=options["model"],
                strategy=options["strategy"],
                epochs=options["epochs"],
                fine_tune_epochs=options["fine_tune_epochs"],
                batch_size=options["batch_size"],
                val_fraction=options["val_fraction"],
                name=options["name"],
                layer=options["layer"],
                train_per_class=options["train_per_class"],
                test_per_class=options["test_per_class"],
                replace=options["replace"],
                seed=options["seed"],
                # One line per epoch (Keras's verbose=2), never its per-step progress bar, which floods logs.
                verbose=2 if options["verbosity"] >= 1 else 0,
            )
        except (TrainingError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for note in report.notes:
            self.stdout.write(note)
        self.stdout.write(report.summary())
        self.stdout.write(f"training curve: {report.extractor.details['curve']} (under MEDIA_ROOT)")
