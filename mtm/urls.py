from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from mtm.api import api
from mtm.views_login import ThrottledLoginView, ThrottledPasswordChangeView, admin_login, admin_password_change
from projects import home

urlpatterns = [
    # Before the admin's own URLs, so its login and password-change pages answer a throttled try as the portal's do.
    path("admin/login/", admin_login),
    path("admin/password_change/", admin.site.admin_view(admin_password_change)),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("", home.home, name="home"),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", ThrottledPasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("", include("models_registry.urls")),
    path("projects/", include("projects.urls")),
    path("gpus/", include("projects.runs.scheduling.urls")),
    path("playground/", include("playground.urls")),
    path("tokens/", include("mtm.urls_tokens")),
    path("audit/", include("mtm.urls_audit")),
]
