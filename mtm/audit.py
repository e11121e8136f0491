"""The audit trail: one AuditEvent per change, whoever made it and through whichever door (page, API, admin, CLI).

Services record changes with `record_change(actor, ...)`, where the Actor says who acted, through which Channel
and from which address; `record` is the lower-level writer (sign-ins use it directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models
from django.http import HttpRequest

from mtm.client_address import client_address
from mtm.models import AuditEvent


class Channel(models.TextChoices):
    """The door a change came through; stored in AuditEvent.via."""

    PAGE = "web", "page"
    API = "api", "API"
    ADMIN = "admin", "admin"
    CLI = "cli", "command line"


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a user (None for the command line acting as nobody), the channel and the address."""

    user: Any
    channel: Channel
    remote_addr: str | None = None

    @classmethod
    def of(cls, request: HttpRequest, channel: Channel) -> Actor:
        """The signed-in user of a page, admin or API request (a bearer token sets request.user too)."""
        user = getattr(request, "auth", None) or getattr(request, "user", None)
        return cls(user, channel, remote_addr(request))

    @classmethod
    def command_line(cls, user: Any = None) -> Actor:
        return cls(user, Channel.CLI)

    @classmethod
    def periodic(cls) -> Actor:
        """The portal itself, in a scheduled job (Celery beat): no user, recorded as the command line's channel."""
        return cls(None, Channel.CLI)

    @property
    def authenticated_user(self) -> Any:
        user = self.user
        return user if user is not None and getattr(user, "is_authenticated", False) else None


def record(
    user: Any,
    action: str,
    obj: models.Model,
    changes: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
    via: str = Channel.PAGE,
) -> AuditEvent:
    """Write an AuditEvent. Call it before deleting `obj`, while it still has its primary key.

    `changes` maps a field to [old, new] and must be JSON-serialisable.
    """
    return _write(user, action, obj, changes, remote_addr(request), str(via))


def record_change(actor: Actor, action: str, obj: models.Model, changes: dict[str, Any] | None = None) -> AuditEvent:
    """A service's record of a change `actor` made (before a delete, while `obj` still has its primary key)."""
    return _write(actor.user, action, obj, changes, actor.remote_addr, str(actor.channel))


def _write(
    user: Any, action: str, obj: models.Model, changes: dict[str, Any] | None, address: str | None, via: str
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=user if user is not None and getattr(user, "is_authenticated", False) else None,
        action=action,
        object_type=obj._meta.label_lower,
        object_id="" if obj.pk is None else str(obj.pk),
        object_repr=str(obj)[:255],
        changes=changes or {},
        remote_addr=address,
        via=via,
    )


def remote_addr(request: HttpRequest | None) -> str | None:
    """The client's address when it is a valid IP: the peer's, or the one trusted proxies name (mtm.client_address)."""
    return client_address(request) if request is not None else None


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for the fields whose values differ."""
    return {key: [before.get(key), after.get(key)] for key in after if before.get(key) != after.get(key)}
