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


def browser_defaults(project: Any = None) -> dict[str, str]:
    """What a browser posts for an untouched new-project form (or `project`'s edit form): every box with its initial
    value, a ticked checkbox as "on", an unticked one not at all."""
    from projects.forms import ProjectForm

    posted = {}
    for name, value in ProjectForm.initial_for(project).items():
        if value is True:
            posted[name] = "on"
        elif value is not False and value is not None:
            posted[name] = str(value)
    return posted


def form_data(roots: Any, model_name: str, **changes: str) -> dict[str, str]:
    """The new-project form as a browser posts it for a small valid project under the portal's roots, changed."""
    base = {
        **browser_defaults(),
        "name": "demo",
        "description": "",
        "model_name": model_name,
        "revision": "",
        "dataset_path": str(roots / "datasets" / "qa.jsonl"),
        "output_directory": str(roots / "outputs" / "demo"),
        "max_steps": "5",
        "max_seq_length": "16",
        "validation_prompt": "Say hello:",
    }
    return {**base, **changes}
