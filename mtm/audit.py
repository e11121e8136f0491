"""The audit trail: one AuditEvent per change, whoever made it and through whichever door (web, api, admin, cli)."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.db import models
from django.http import HttpRequest

from mtm.models import AuditEvent


def record(
    actor: Any,
    action: str,
    obj: models.Model,
    changes: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
    via: str = "web",
) -> AuditEvent:
    """Write an AuditEvent. Call it before deleting `obj`, while it still has its primary key.

    `changes` maps a field to [old, new] and must be JSON-serialisable.
    """
    return AuditEvent.objects.create(
        actor=actor if actor is not None and getattr(actor, "is_authenticated", False) else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_id="" if obj.pk is None else str(obj.pk),
        object_repr=str(obj)[:255],
        changes=changes or {},
        remote_addr=remote_addr(request),
        via=via,
    )


def remote_addr(request: HttpRequest | None) -> str | None:
    """The peer's address when it is a valid IP (REMOTE_ADDR, as set by the server or the proxy in front)."""
    raw = str(request.META.get("REMOTE_ADDR", "")) if request is not None else ""
    try:
        # An IPv6 zone ("%eth0") is no part of the address and PostgreSQL's inet refuses it.
        return str(ipaddress.ip_address(raw.strip().split("%")[0]))
    except ValueError:
        return None


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for the fields whose values differ."""
    return {key: [before.get(key), after.get(key)] for key in after if before.get(key) != after.get(key)}
