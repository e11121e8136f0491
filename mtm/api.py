"""The JSON API object (/api/v1): authentication, JSON error bodies, and each app's router."""

from __future__ import annotations

from ninja import NinjaAPI, Swagger

from models_registry.api import router as registry_router
from mtm.api_errors import JsonObjectParser, install_error_handlers
from mtm.api_tokens import router as tokens_router
from mtm.auth import api_auth
from playground.api import router as playground_router
from projects.api import router as projects_router
from projects.publishing.api import router as publish_router

api = NinjaAPI(
    title="Model Training Manager API",
    version="1",
    urls_namespace="api-v1",
    auth=api_auth,
    parser=JsonObjectParser(),
    # No validator badge: swagger-ui would otherwise send the schema to validator.swagger.io.
    docs=Swagger(settings={"validatorUrl": None}),
    description="Session cookie or `Authorization: Bearer <token>` on every endpoint. "
    'Errors: {"detail": "...", "errors": [{"code", "message", "hint"}]}.',
)
install_error_handlers(api)

# Order matters: URL patterns are tried in mounting order. The registry's fixed paths
# (/projects/validate-model, /projects/models/available, ...) must come before the projects
# router's /projects/{id}, or that pattern would answer for them.
api.add_router("", registry_router)
# Projects and runs (projects/api.py), after the registry:
api.add_router("", projects_router)
api.add_router("", publish_router)
api.add_router("", tokens_router)
api.add_router("", playground_router)
