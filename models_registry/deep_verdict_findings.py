"""The deep verdict's findings, worded for people: refusals and warnings as {code, message, hint}, with transformers'
own words quoted, a permission error named as one (whatever step met it), and a missing library with its install
command."""

from __future__ import annotations

import errno
import os
import re
from typing import Any

from pydantic import BaseModel, Field

from models_registry.checks import redownload_hint
from mtm.shared.problems import Problem

_PIP = re.compile(r"`?(pip install [^`\n]+?)`?(?:[.)\n]|$)")


class Refused(Exception):
    """Stops the examination at the first refusal (later steps would only repeat its consequence)."""


class Findings(BaseModel):
    """What the examination found. Its JSON (model_dump: errors, warnings and facts) is what the child process
    answers, and DeepVerdict reads it."""

    model_name: str = Field(exclude=True)
    folder: str = Field("", exclude=True)
    errors: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)

    def refuse(self, code: str, message: str, hint: str) -> Refused:
        self.errors.append(Problem(code, message, hint))
        return Refused(code)

    def warn(self, code: str, message: str, hint: str = "") -> None:
        self.warnings.append(Problem(code, message, hint))

    @property
    def redownload(self) -> str:
        return redownload_hint(self.model_name)


def quoted(exc: BaseException, limit: int = 500) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def permission_error(exc: BaseException) -> BaseException | None:
    """The permission error behind `exc` (transformers re-raises many as OSError or ValueError with its own words)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno == errno.EACCES):
            return exc
        if "Permission denied" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def unreadable_files(folder: str) -> list[str]:
    """The folder's files this process may not read (safetensors reports one as "No such file or directory")."""
    if not folder:
        return []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return [folder]
    return [
        n for n in names if os.path.exists(os.path.join(folder, n)) and not os.access(os.path.join(folder, n), os.R_OK)
    ]


def _install_command(exc: BaseException) -> str | None:
    found = _PIP.search(str(exc))
    return found.group(1).strip() if found else None


def fail(
    found: Findings, exc: BaseException, code: str, what: str, hint: str, needs: str = "", instead: str = ""
) -> Refused:
    """A refusal quoting transformers' words: "{what}. transformers says: ...". A permission error becomes
    "unreadable", whatever step met it; a missing library is "{needs} needs a library ...", with its install command
    and `instead` (what to do without it)."""
    if isinstance(exc, MemoryError):
        raise exc  # the limited child reports running out of memory itself
    denied = permission_error(exc)
    unreadable = unreadable_files(found.folder)
    if denied or unreadable:
        where = ", ".join(unreadable[:3]) or getattr(denied, "filename", None) or "a file of the model"
        return found.refuse(
            "model_unreadable",
            f"Model '{found.model_name}': {where} is unreadable by the worker's user (uid {os.getuid()}), so "
            "transformers could not read it" + (f" ({quoted(denied, 200)})." if denied else "."),
            f"Make the model's files readable by uid {os.getuid()} (e.g. chmod -R a+rX on the model folder and its "
            "blobs), then check the model again. Nothing needs to be downloaded again.",
        )
    if isinstance(exc, ImportError):
        command = _install_command(exc)
        return found.refuse(
            "library_missing",
            f"Model '{found.model_name}': {needs or what} needs a library that is not installed on this worker. "
            f"transformers says: {quoted(exc)}",
            (f"Ask the administrator to install it on the workers: {command}. " if command else "")
            + (instead or "Or use a copy of the model that does not need it."),
        )
    return found.refuse(code, f"Model '{found.model_name}': {what}. transformers says: {quoted(exc)}", hint)
