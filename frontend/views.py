from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie


@ensure_csrf_cookie  # the page's fetch() reads the csrftoken cookie and sends it as X-CSRFToken
def draw(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/draw.html")
