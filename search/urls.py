from __future__ import annotations

from django.urls import path

from search.apis import CollectionListApi, ImageCreateApi, ImageDetailApi, IndexListApi, SketchSearchApi

urlpatterns = [
    path("search/", SketchSearchApi.as_view(), name="search"),
    path("indexes/", IndexListApi.as_view(), name="index-list"),
    path("collections/", CollectionListApi.as_view(), name="collection-list"),
    path("images/", ImageCreateApi.as_view(), name="image-create"),
    path("images/<int:image_id>/", ImageDetailApi.as_view(), name="image-detail"),
]
