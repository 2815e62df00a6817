from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from sketchsite.health import healthz
from sketchsite.media import media

urlpatterns = [
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
