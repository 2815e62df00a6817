from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def draw(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/draw.html")
