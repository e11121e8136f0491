"""Model names and revisions, checked before anything touches the disk."""

from __future__ import annotations

import re

from huggingface_hub.utils import HFValidationError, validate_repo_id

from mtm.shared.problems import Problem

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# A git ref name as the Hub uses them: "main", "v1.0", "refs/pr/3". No "..", no leading "/" or "-".
_REF = re.compile(r"^(?!.*\.\.)(?!/)(?!-)[A-Za-z0-9._/-]{1,255}(?<!/)$")

NAME_HINT = "Use the Hub's form 'org/name' (letters, digits, '-', '_' and '.'), e.g. meta-llama/Llama-3.2-3B-Instruct."


def name_error(name: object) -> Problem | None:
    """Why `name` is not a model name the portal will look up, or None when it is fine."""
    if not isinstance(name, str) or not name.strip():
        return Problem("invalid_model_name", "Model name is empty.", NAME_HINT)
    shown = name.encode("unicode_escape").decode("ascii")[:120]
    if not name.isascii():
        return Problem(
            "invalid_model_name",
            f"Model name '{shown}' contains non-ASCII characters.",
            NAME_HINT,
        )
    if len(name) > 96:
        return Problem(
            "invalid_model_name",
            f"Model name is {len(name)} characters long; the limit is 96.",
            NAME_HINT,
        )
    if name.startswith(("/", "~", ".")) or "\\" in name:
        return Problem(
            "invalid_model_name",
            f"Model name '{shown}' looks like a path, not a Hub repo id.",
            "To use a model folder on this server, ask staff to add a Model Override for a name that points to it. "
            + NAME_HINT,
        )
    try:
        validate_repo_id(name)
    except HFValidationError:
        return Problem(
            "invalid_model_name",
            f"Model name '{shown}' is not a valid repo id: {_why(name)}.",
            NAME_HINT,
        )
    return None


def _why(name: str) -> str:
    if name.count("/") > 1:
        return "it has more than one '/'"
    if any(len(part) > 96 for part in name.split("/")):
        return "a part is longer than 96 characters"
    if "--" in name or ".." in name:
        return "'--' and '..' are not allowed"
    if name.endswith(".git"):
        return "it cannot end in '.git'"
    return "only letters, digits, '-', '_' and '.' are allowed, and no part may start or end with '-' or '.'"


def revision_error(revision: str) -> Problem | None:
    if _COMMIT.match(revision) or (_REF.match(revision) and "//" not in revision and not revision.endswith(".lock")):
        return None
    shown = revision.encode("unicode_escape").decode("ascii")[:120]
    return Problem(
        "invalid_revision",
        f"Revision '{shown}' is neither a 40-character commit hash nor a branch or tag name.",
        "Leave the revision blank for 'main', or give a branch, a tag or a full commit hash.",
    )


def is_commit_hash(revision: str) -> bool:
    return bool(_COMMIT.match(revision))


def repo_folder_name(name: str) -> str:
    """The cache folder huggingface_hub uses for a model: models--org--name."""
    return "--".join(["models", *name.split("/")])


def name_from_folder(folder: str) -> str | None:
    if not folder.startswith("models--"):
        return None
    return "/".join(folder[len("models--") :].split("--"))
