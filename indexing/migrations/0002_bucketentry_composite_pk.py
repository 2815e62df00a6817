"""BucketEntry becomes (table, image) keyed, without surrogate id, foreign-key triggers or single-column
indexes, and with a covering (table, key) INCLUDE (image) index: bulk writes maintain 2 indexes instead of 5.

Django cannot alter a table to a composite primary key, so the table is recreated; index versions built
before this migration lose their bucket rows and are deleted (rebuild them: `manage.py build_index`, or
`make run` for the demo).
"""

import django.db.models.deletion
from django.db import migrations, models


def delete_index_versions(apps, schema_editor):  # noqa: ANN001, ANN201 - migration signature
    apps.get_model("indexing", "BucketEntry").objects.all().delete()
    apps.get_model("indexing", "LSHIndex").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("indexing", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(delete_index_versions, migrations.RunPython.noop),
        migrations.DeleteModel(name="BucketEntry"),
        migrations.CreateModel(
            name="BucketEntry",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "table_id", "image_id", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("key", models.BigIntegerField()),
                (
                    "image",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="bucket_entries",
                        to="indexing.image",
                    ),
                ),
                (
                    "table",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="entries",
                        to="indexing.hashtable",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "bucket entries",
                "indexes": [
                    models.Index(fields=["table", "key"], include=("image",), name="bucketentry_table_key")
                ],
            },
        ),
    ]
