from __future__ import annotations

from typing import Any

from django import template

from evaluation.reports import format_value

register = template.Library()


@register.filter
def metric(value: Any) -> str:
    """A number as the command-line tables print it (None -> "inf" for IE, "-" elsewhere is not needed)."""
    return format_value(value)
