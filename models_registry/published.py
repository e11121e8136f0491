"""What the registry says of a name published from a run, so that a fine-tune never passes for an upstream model:
where such a name resolves, who published it from which run on which base (`provenance`); the organisations a
published name may not use (`organisation_problem`); and, once a name is unpublished, who did it and when
(`unpublished_problem`, read from the audit log: unpublishing deletes the row, never the files).

Names are compared as a reader sees them (`name_key`): case-folded, without '-', '_' or '.', and with letters a
reader takes for one another folded together, so 'Team/aIice_bot' is 'team/alice-bot'.

The rule for a published name: it has an organisation part ("team/bot", never a bare "bot": bare names on the Hub
are its oldest canonical models, gpt2 or bert-base-uncased), and that organisation does not read as, or start like,
one of HUB_ORGANISATIONS or SHORT_FORMS ('meta-llama3' and 'mistral' could pass for meta-llama's and mistralai's;
a plural ending on a word aside: 'xais-org' reads as 'xai-org', 'admins' as 'admin'),
nor read as the organisation of a model in the Hugging Face cache (downloaded from the Hub, so a Hub organisation;
one of at least PREFIX_MIN_KEY characters is not to be started like either). Members can write in the cache, so only
a repo the model list shows as a model counts (models_registry.cache_claims), and never over an organisation the
portal has recorded as the team's (`team_organisations`: a member's username, or the organisation of a model
published here). Overrides do not reserve their organisation: staff map team-local names too. A team publishes under
its own organisation; staff who must map an upstream-looking name to a folder add an override.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC
from pathlib import Path

from django.contrib.auth import get_user_model

from models_registry.cache_claims import cached_models
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
        "Alibaba-NLP",
        "ai21labs",
        "allenai",
        "amazon",
        "answerdotai",
        "bartowski",
        "apple",
        "BAAI",
        "baichuan-inc",
        "baidu",
        "bigcode",
        "bigscience",
        "ByteDance-Seed",
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
        "LiquidAI",
        "intfloat",
        "lmsys",
        "lmstudio-community",
        "meta",
        "meta-llama",
        "microsoft",
        "MiniMaxAI",
        "mistral-community",
        "mistralai",
        "mlx-community",
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
        "TheBloke",
        "TinyLlama",
        "tencent",
        "togethercomputer",
        "unsloth",
        "upstage",
        "xai-org",
        "zai-org",
    }
)
# What people call famous organisations for short, and the Hub organisation each could pass for.
SHORT_FORMS = {
    "alibaba": "Qwen",
    "bytedance": "ByteDance-Seed",
    "cohere": "CohereForAI",
    "deepseek": "deepseek-ai",
    "eleuther": "EleutherAI",
    "minimax": "MiniMaxAI",
    "mistral": "mistralai",
    "moonshot": "moonshotai",
    "nous": "NousResearch",
    "stability": "stabilityai",
    "xai": "xai-org",
    "zhipu": "zai-org",
    "fb": "facebook",
    "hf": "huggingface",
    "ms": "microsoft",
    "msft": "microsoft",
}
# Names that could pass for the portal's own, or for its staff.
PORTAL_WORDS = ("admin", "administrator", "mtm", "official", "portal", "root", "staff", "system")
# A cache organisation with a shorter key reserves only itself, not every organisation that starts like it.
PREFIX_MIN_KEY = 4
ORGANISATION_HINT = "Publish under your team's own organisation, e.g. team/{model} or {user}/{model}."


# Letters a reader takes for one another in a name (the hostile tester published 'Meta-LIama' with a capital I):
# pairs first ('rn' reads as 'm'), then single characters.
_LOOK_ALIKE_PAIRS = (("rn", "m"), ("vv", "w"))
_LOOK_ALIKE = str.maketrans({"i": "l", "1": "l", "|": "l", "0": "o"})


def part_key(part: str) -> str:
    """One part of a name as a reader sees it: 'Meta_Llama', 'meta-llama' and 'Meta-LIama' are one."""
    key = "".join(c for c in part.casefold() if c not in "-_.")
    for pair, one in _LOOK_ALIKE_PAIRS:
        key = key.replace(pair, one)
    return key.translate(_LOOK_ALIKE)


def name_key(name: str) -> str:
    """A whole name as a reader sees it: 'Team/aIice_bot' and 'team/alice-bot' are one name."""
    organisation, _, model = name.rpartition("/")
    return f"{part_key(organisation)}/{part_key(model)}"


def reads_the_same(name: str, other: str) -> str:
    """The sentence that opens a refusal of `name` for resembling `other`; nothing when they are the same text."""
    if name == other:
        return ""
    return f"'{name}' reads the same as '{other}' (case, '-', '_', '.' and look-alike letters aside). "


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


def first_word_key(organisation: str) -> str:
    """The key of an organisation's first word: 'fb-research' and 'FB_labs' start with the word 'fb'."""
    return part_key(re.split(r"[-_.]", organisation, maxsplit=1)[0])


def _singular(word_key: str) -> str:
    """A word's key without a plural ending ('s', 'es'), as a reader passes over it: 'metas' reads as 'meta',
    'xaies' as 'xai'. A trailing 'e' goes too, on both sides of a comparison ('googles' and 'google' are 'googl');
    a key of two letters or fewer is kept whole ('ms' is not 'm')."""
    for ending in ("s", "e"):
        if len(word_key) > 2 and word_key.endswith(ending):
            word_key = word_key[: -len(ending)]
    return word_key


def singular_key(organisation: str) -> str:
    """An organisation's key with each word's plural ending dropped: 'xais-org' and 'xai-org' are one."""
    return "".join(_singular(part_key(word)) for word in re.split(r"[-_.]", organisation))


def team_organisations() -> frozenset[str]:
    """The organisations the portal has recorded as the team's, as keys (part_key): every member's username and the
    organisation of every model published here. A cache folder never reserves one of these."""
    usernames = get_user_model().objects.values_list("username", flat=True)
    published = PublishedModel.objects.values_list("model_name", flat=True)
    return frozenset(part_key(u) for u in usernames.iterator()) | frozenset(
        part_key(name.rpartition("/")[0]) for name in published.iterator() if "/" in name
    )


def _organisation_owner(organisation: str, cache_dir: Path, team: Collection[str]) -> str | None:
    """Why an organisation is not the team's to publish under, or None: it reads as a reserved one (a plural ending
    on any word aside), its first word does, or it starts like one (the longest such is named)."""
    key, first = part_key(organisation), first_word_key(organisation)
    singular, first_singular = singular_key(organisation), _singular(first)
    reserved = _reserved_organisations(cache_dir, team)
    for reserved_key, what, _, _ in reserved:
        if key == reserved_key:
            return f"is {what}"
    for _, what, _, reserved_singular in reserved:
        if singular == reserved_singular:
            return f"reads as {what} (a plural ending aside)"
    for reserved_key, what, by_prefix, _ in reserved:
        if by_prefix and key.startswith(reserved_key):
            return f"starts like {what} (an upstream organisation with a version or suffix added)"
    for reserved_key, what, _, reserved_singular in reserved:
        if first == reserved_key or first_singular == reserved_singular:
            return f"starts with the word of {what}"
    return None


def _reserved_organisations(cache_dir: Path, team: Collection[str]) -> list[tuple[str, str, bool, str]]:
    """(key, what it is, whether names that start like it are reserved too, singular key), longest key first. The
    organisations of the cache's models are reserved, but not those in `team` (keys of the team's own)."""
    reserved = [
        (part_key(name), f"the Hugging Face Hub organisation '{name}'", True, singular_key(name))
        for name in HUB_ORGANISATIONS
    ]
    reserved += [
        (
            part_key(short),
            f"'{short}', a short form of the Hugging Face Hub organisation '{hub}'",
            len(part_key(short)) >= PREFIX_MIN_KEY,
            singular_key(short),
        )
        for short, hub in SHORT_FORMS.items()
    ]
    reserved += [
        (
            part_key(word),
            f"'{word}', a name that could pass for the portal's own or its staff's",
            False,
            singular_key(word),
        )
        for word in PORTAL_WORDS
    ]
    for model_name in sorted(cached_models(cache_dir)):
        organisation = model_name.split("/", 1)[0]
        key = part_key(organisation)
        if key in team:
            continue
        what = f"the organisation of '{model_name}' in the Hugging Face cache"
        reserved.append((key, what, len(key) >= PREFIX_MIN_KEY, singular_key(organisation)))
    return sorted(reserved, key=lambda item: (-len(item[0]), item[1]))


def organisation_problem(
    name: str, cache_dir: Path, username: str = "me", team: Collection[str] = ()
) -> Problem | None:
    """Why `name` (a valid repo id) may not be published: no organisation part, or one that is not the team's.
    `team` holds the keys of the organisations recorded as the team's (team_organisations)."""
    if "/" not in name:
        return Problem(
            "published_name_needs_organisation",
            f"'{name}' has no organisation part: bare names on the Hugging Face Hub are its oldest models (gpt2, "
            "bert-base-uncased), and a fine-tune published as one could pass for it.",
            ORGANISATION_HINT.format(model=name, user=username),
        )
    organisation, model = name.split("/", 1)
    owner = _organisation_owner(organisation, cache_dir, team)
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
    runs = PublishedModel._meta.get_field("run").related_model  # the projects app's run table, through our own FK
    return isinstance(run_id, int) and runs.objects.filter(pk=run_id).exists()


def last_event(action: str, name: str) -> AuditEvent | None:
    """The newest audit event of `action` (PUBLISH_ACTION or UNPUBLISH_ACTION) for the published name `name`."""
    side = 0 if action == UNPUBLISH_ACTION else 1  # changes are [before, after]: an unpublishing's name is before
    return (
        AuditEvent.objects.filter(action=action, object_type=PUBLISHED_TYPE, **{f"changes__model_name__{side}": name})
        .select_related("actor")
        .order_by("-at", "-pk")
        .first()
    )


def last_event_alike(action: str, name: str) -> AuditEvent | None:
    """The newest audit event of `action` for a published name that reads as `name` (name_key), in any spelling."""
    side = 0 if action == UNPUBLISH_ACTION else 1
    key = name_key(name)
    named = (
        AuditEvent.objects.filter(action=action, object_type=PUBLISHED_TYPE)
        .order_by("-at", "-pk")
        .values_list("pk", f"changes__model_name__{side}")
    )
    for pk, event_name in named.iterator():
        if isinstance(event_name, str) and name_key(event_name) == key:
            return AuditEvent.objects.select_related("actor").get(pk=pk)
    return None


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
    "SHORT_FORMS",
    "last_event",
    "last_event_alike",
    "name_key",
    "part_key",
    "reads_the_same",
    "organisation_problem",
    "provenance",
    "team_organisations",
    "unpublished_problem",
]
