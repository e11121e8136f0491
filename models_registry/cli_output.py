"""Plain-text renderings of resolver results for the management commands (--json prints the API's dicts)."""

from __future__ import annotations

import json
from typing import Any

EXIT_VALID = 0
EXIT_INVALID = 1
MAX_FILES_SHOWN = 12  # --json lists them all


def as_json(data: Any) -> str:
    # ensure_ascii: a name with undecodable bytes (surrogates from argv) still prints on any terminal.
    return json.dumps(data, indent=2, ensure_ascii=True)


def printable(text: str | None) -> str:
    """Text safe for any terminal: non-ASCII and control characters escaped."""
    if text is None:
        return "-"
    if text.isascii() and text.isprintable():
        return text
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _problems(label: str, problems: list[dict[str, str]]) -> list[str]:
    lines = []
    for problem in problems:
        lines.append(f"{label} [{problem['code']}] {printable(problem['message'])}")
        if problem.get("hint"):
            lines.append(f"    hint: {printable(problem['hint'])}")
    return lines


def render_resolution(result: dict[str, Any]) -> str:
    """The validate-model dict as a person reads it: verdict, source, path, revision, then errors and warnings."""
    verdict = "valid" if result["valid"] else "INVALID"
    lines = [
        f"{printable(result['model_name'])}: {verdict}",
        f"  source:   {printable(result['source'])}",
        f"  path:     {printable(result['path'])}",
        f"  revision: {printable(result['revision'])}",
    ]
    if files := result["files"]:
        shown = ", ".join(printable(f) for f in files[:MAX_FILES_SHOWN])
        more = f" and {len(files) - MAX_FILES_SHOWN} more" if len(files) > MAX_FILES_SHOWN else ""
        lines.append(f"  files:    {len(files)}: {shown}{more}")
    if result.get("tokenizer_source"):
        lines.append(f"  tokenizer vocabulary: {printable(result['tokenizer_source'])}")
    if result.get("provenance"):
        lines.append(f"  published here: {printable(result['provenance'])}")
    lines += _problems("ERROR", result["errors"])
    lines += _problems("WARNING", result["warnings"])
    return "\n".join(lines)


def render_listing(cache_dir: str, models: list[dict[str, Any]]) -> str:
    lines = [f"Model cache: {printable(cache_dir)}", f"{len(models)} model(s)"]
    for item in models:
        verdict = "valid" if item["valid"] else "INVALID"
        revision = (item["revision"] or "-")[:12]
        lines.append(f"{printable(item['model_name'])}  [{item['source']}, {revision}]  {verdict}")
        lines.append(f"    path: {printable(item['path'])}")
        lines += ["  " + line for line in _problems("ERROR", item["errors"])]
        lines += ["  " + line for line in _problems("WARNING", item["warnings"])]
    return "\n".join(lines)
