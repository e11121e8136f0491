from __future__ import annotations

from django.urls import path

from mtm import views_tokens

app_name = "tokens"

urlpatterns = [
    path("", views_tokens.token_list, name="list"),
    path("<int:token_id>/revoke/", views_tokens.token_revoke, name="revoke"),
]
