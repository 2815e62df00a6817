from __future__ import annotations

from django.urls import path

from evaluation import views

urlpatterns = [
    path("", views.run_list, name="evaluation-dashboard"),
    path("<int:run_id>/", views.run_detail, name="evaluation-run"),
]
