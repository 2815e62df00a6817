"""LSHIndex.w -> LSHIndex.params (the family's own parameters, one JSON field); choices read from the registries."""

from typing import Any

from django.db import migrations, models

import indexing.models

# The families that had a w column value of their own when this migration was written (indexing.lsh.hashing).
_FAMILIES_WITH_W = ("real",)


def w_to_params(apps: Any, schema_editor: Any) -> None:
    LSHIndex = apps.get_model("indexing", "LSHIndex")  # noqa: N806 - a model class
    for index in LSHIndex.objects.only("pk", "family", "w"):
        params = {"w": float(index.w)} if index.family in _FAMILIES_WITH_W else {}
        LSHIndex.objects.filter(pk=index.pk).update(params=params)


def params_to_w(apps: Any, schema_editor: Any) -> None:
    LSHIndex = apps.get_model("indexing", "LSHIndex")  # noqa: N806 - a model class
    for index in LSHIndex.objects.only("pk", "params"):
        LSHIndex.objects.filter(pk=index.pk).update(w=float((index.params or {}).get("w", 4.0)))


class Migration(migrations.Migration):
    dependencies = [
        ("indexing", "0006_lshindex_probes_tuning"),
    ]

    operations = [
        migrations.AddField(
            model_name="lshindex",
            name="params",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(w_to_params, params_to_w),
        migrations.RemoveField(
            model_name="lshindex",
            name="w",
        ),
        migrations.AlterField(
            model_name="extractor",
            name="backbone",
            field=models.CharField(choices=indexing.models.backbone_choices, max_length=50),
        ),
        migrations.AlterField(
            model_name="lshindex",
            name="family",
            field=models.CharField(choices=indexing.models.family_choices, max_length=8),
        ),
    ]
