"""What the registry says of a name published from a run, so that a fine-tune never passes for an upstream model:
where such a name resolves, who published it from which run on which base (`provenance`); the organisations a
published name may not use (`organisation_problem`); and, once a name is unpublished, who did it and when
(`unpublished_problem`, read from the audit log: unpublishing deletes the row, never the files).

The rule for a published name: it has an organisation part ("team/bot", never a bare "bot": bare names on the Hub
are its oldest canonical models, gpt2 or bert-base-uncased), and that organisation is neither one of a model in
the Hugging Face cache (downloaded from the Hub, so it is a Hub organisation) nor one of HUB_ORGANISATIONS (compared
without case, '-', '_' or '.'). Overrides do not reserve their organisation: staff map team-local names too. A
team publishes under its own organisation; staff who must map an upstream-looking name to a folder add an override.
"""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path

from models_registry.models import PublishedModel
from mtm.models import AuditEvent
from mtm.shared.problems import Problem

PUBLISH_ACTION = "published_model.create"
UNPUBLISH_ACTION = "published_model.delete"
PUBLISHED_TYPE = "models_registry.publishedmodel"

# Organisations whose models people download from the Hub: a fine-tune published under one could pass for theirs.
HUB_ORGANISATIONS = frozenset(
    {
        "01-ai",
        "ai21labs",
        "allenai",
        "amazon",
        "answerdotai",
        "apple",
        "BAAI",
        "baichuan-inc",
        "bigcode",
        "bigscience",
        "CohereForAI",
        "CohereLabs",
        "databricks",
        "deepseek-ai",
        "distilbert",
        "EleutherAI",
        "facebook",
        "FacebookAI",
        "google",
        "google-bert",
        "google-t5",
        "HuggingFaceH4",
        "HuggingFaceM4",
        "HuggingFaceTB",
        "huggingface",
        "ibm",
        "ibm-granite",
        "internlm",
        "intfloat",
        "lmsys",
        "meta",
        "meta-llama",
        "microsoft",
        "MiniMaxAI",
        "mistral-community",
        "mistralai",
        "moonshotai",
        "mosaicml",
        "NousResearch",
        "nvidia",
        "openai",
        "openai-community",
        "openbmb",
        "Qwen",
        "Salesforce",
        "sentence-transformers",
        "Snowflake",
        "stabilityai",
        "THUDM",
        "tiiuae",
        "TinyLlama",
        "togethercomputer",
        "unsloth",
        "upstage",
        "xai-org",
        "zai-org",
    }
)
ORGANISATION_HINT = "Publish under your team's own organisation, e.g. team/{model} or {user}/{model}."


# Letters a reader takes for one another in a name (the hostile tester published 'Meta-LIama' with a capital I).
_LOOK_ALIKE = str.maketrans({"i": "l", "1": "l", "|": "l", "0": "o"})


def organisation_key(organisation: str) -> str:
    """'Meta_Llama', 'meta-llama' and 'Meta-LIama' are one organisation to a reader."""
    key = "".join(c for c in organisation.lower() if c not in "-_.")
    return key.replace("rn", "m").replace("vv", "w").translate(_LOOK_ALIKE)


def _who(user) -> str:
    return user.get_username() if user is not None else "a user since deleted"


def _when(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def provenance(published: PublishedModel) -> str:
    """The sentence shown wherever `published`'s name resolves: what it is, so it never passes for upstream."""
    base = published.base_model or "an unrecorded base model"
    if published.base_revision:
        base += f" (revision {published.base_revision[:12]})"
    run = f"run {published.run_id}" if published.run_id else "a run (since deleted)"
    return (
        f"'{published.model_name}' is a fine-tune published in this portal by {_who(published.published_by)} on "
        f"{_when(published.published_at)}, from {run} of project '{published.project_name}', on base model {base}. "
        "It is not a model of that name from the Hugging Face Hub."
    )


def shadowed_warning(published: PublishedModel, cache_path: str) -> Problem:
    """A model of the published name came into the HF cache after it was published: the cache copy wins (the order
    is fixed: override, cache, portal), which everyone training on the name must be told."""
    return Problem(
        "published_model_shadowed",
        f"'{published.model_name}' resolves to the Hugging Face cache ({cache_path}), not to the fine-tune published "
        f"under that name in this portal (from run {published.run_id or '(deleted)'}): the cache comes first.",
        "If the fine-tune is meant, ask staff to remove the cache copy or add a Model Override to its folder "
        f"({published.path}); otherwise unpublish the portal name.",
    )


def _organisation_owner(key: str, cache_dir: Path) -> str | None:
    """Why an organisation (its key) is not the team's to publish under, or None."""
    for name in sorted(HUB_ORGANISATIONS):
        if organisation_key(name) == key:
            return f"is the Hugging Face Hub organisation '{name}'"
    try:
        entries = sorted(os.listdir(cache_dir))
    except OSError:
        entries = []
    for entry in entries:
        parts = entry.split("--")
        if len(parts) == 3 and parts[0] == "models" and organisation_key(parts[1]) == key:
            return f"is the organisation of '{parts[1]}/{parts[2]}' in the Hugging Face cache"
    return None


def organisation_problem(name: str, cache_dir: Path, username: str = "me") -> Problem | None:
    """Why `name` (a valid repo id) may not be published: no organisation part, or one that is not the team's."""
    if "/" not in name:
        return Problem(
            "published_name_needs_organisation",
            f"'{name}' has no organisation part: bare names on the Hugging Face Hub are its oldest models (gpt2, "
            "bert-base-uncased), and a fine-tune published as one could pass for it.",
            ORGANISATION_HINT.format(model=name, user=username),
        )
    organisation, model = name.split("/", 1)
    owner = _organisation_owner(organisation_key(organisation), cache_dir)
    if owner is None:
        return None
    return Problem(
        "organisation_reserved",
        f"'{name}' would be published under the organisation '{organisation}', which {owner}: a fine-tune "
        "published there could pass for that organisation's own model.",
        ORGANISATION_HINT.format(model=model, user=username)
        + " Staff who need this very name for a folder can add a Model Override for it.",
    )


def _run_page_exists(run_id: object) -> bool:
    from projects.models import TrainingRun  # the run is the projects app's; only its existence is asked

    return isinstance(run_id, int) and TrainingRun.objects.filter(pk=run_id).exists()


def last_event(action: str, name: str) -> AuditEvent | None:
    """The newest audit event of `action` (PUBLISH_ACTION or UNPUBLISH_ACTION) for the published name `name`."""
    side = 0 if action == UNPUBLISH_ACTION else 1  # changes are [before, after]: an unpublishing's name is before
    return (
        AuditEvent.objects.filter(action=action, object_type=PUBLISHED_TYPE, **{f"changes__model_name__{side}": name})
        .select_related("actor")
        .order_by("-at", "-pk")
        .first()
    )


def unpublished_problem(name: str) -> Problem | None:
    """The model_not_found error for a name that was published here and unpublished since: by whom, when, and
    what to do. None when the audit log has no such unpublishing."""
    event = last_event(UNPUBLISH_ACTION, name)
    if event is None:
        return None
    facts = {key: value[0] for key, value in event.changes.items() if isinstance(value, list) and value}
    run_id = facts.get("run")
    project = facts.get("project_name") or "?"
    base = facts.get("base_model") or ""
    source = f"run {run_id} of project '{project}'" if run_id else f"a run of project '{project}'"
    kept = f" Its files were not deleted: {facts['path']}." if facts.get("path") else ""
    another = f"pick another base model (its base was {base})" if base else "pick another base model"
    if _run_page_exists(run_id):
        again = f"To train on it again, publish it again from run {run_id}'s page (Publish as '{name}'), or {another}."
    else:
        again = (
            f"Its run has been deleted, so it cannot be published again from the portal: {another}, or ask staff "
            "for a Model Override that points at its folder."
        )
    return Problem(
        "model_not_found",
        f"Model '{name}' not found. Please ensure the model is downloaded: '{name}' was a fine-tune published in "
        f"this portal from {source} and was unpublished by {_who(event.actor)} on {_when(event.at)}.{kept}",
        again,
    )


__all__ = [
    "HUB_ORGANISATIONS",
    "last_event",
    "shadowed_warning",
    "organisation_problem",
    "provenance",
    "unpublished_problem",
]
