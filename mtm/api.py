"""The JSON API object; each app's router is mounted here."""

from __future__ import annotations

from ninja import NinjaAPI

api = NinjaAPI(title="Model Training Manager API", version="1", urls_namespace="api-v1")
