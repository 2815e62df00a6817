from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from sketchsite.health import healthz
from sketchsite.media import media


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    # Browsers ask for /favicon.ico on pages that name none (the API's JSON, the admin's error pages).
    return HttpResponseRedirect(static("frontend/favicon.svg"))  # resolved per request: the manifest may be new


admin.site.site_header = "Sketchsearch administration"
admin.site.site_title = "Sketchsearch admin"
admin.site.index_title = "Collections, images, indexes, jobs and evaluation runs"

urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path(f"{settings.MEDIA_URL.strip('/')}/<path:path>", media, name="media"),
    path("api/", include("search.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("evaluation/", include("evaluation.urls")),
    path("api/evaluations/", include("evaluation.api_urls")),
    path("", include("frontend.urls")),
]
