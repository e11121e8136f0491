"""Test clients for the pages: with DEBUG off the settings redirect plain HTTP to HTTPS, so every request is secure."""

from __future__ import annotations

from typing import Any

from django.test import Client


class HttpsClient(Client):
    """Every request over HTTPS, followed redirects included."""

    def generic(self, *args: Any, **kwargs: Any):
        kwargs["secure"] = True
        return super().generic(*args, **kwargs)


def secure_client(user: Any = None, **kwargs: Any) -> HttpsClient:
    """An HTTPS test client, logged in as `user` when one is given; kwargs go to Client (enforce_csrf_checks=...)."""
    client = HttpsClient(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def browser_defaults() -> dict[str, str]:
    """What a browser posts for an untouched new-project form: every box with its initial value, a ticked
    checkbox as "on", an unticked one not at all."""
    from projects.forms import ProjectForm

    posted = {}
    for name, value in ProjectForm.initial_for(None).items():
        if value is True:
            posted[name] = "on"
        elif value is not False and value is not None:
            posted[name] = str(value)
    return posted
