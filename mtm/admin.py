"""Admin for API tokens (hashes only, revocable) and the audit trail (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from mtm.audit import Actor, Channel
from mtm.models import ApiToken, AuditEvent
from mtm.token_services import revoke_token
from mtm.user_admin import AuditedUserAdmin  # noqa: F401  (registers the audited user pages)
from mtm.views_login import ThrottledAdminAuthenticationForm

# The admin's password form counts and refuses failed sign-ins like the portal's login page (mtm/throttle.py).
admin.site.login_form = ThrottledAdminAuthenticationForm
admin.site.site_header = admin.site.site_title = "Model Training Manager administration"
admin.site.index_title = "Portal administration"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    readonly_fields = ("user", "name", "prefix", "token_hash", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A token is shown once, when it is issued: by its owner on the API tokens page or `create_api_token`.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        actor = Actor.of(request, Channel.ADMIN)
        revoked = sum(revoke_token(token, actor=actor) for token in queryset)
        self.message_user(request, f"Revoked {revoked} token{'s' if revoked != 1 else ''}.")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "object_type", "object_repr", "via", "remote_addr")
    list_filter = ("action", "object_type", "via", "at")
    search_fields = ("object_repr", "object_id", "actor__username", "action")
    list_select_related = ("actor",)
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
