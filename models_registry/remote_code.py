"""Whether a model folder asks for its own Python code (`auto_map`), and whether loading it could work here.

transformers runs a model's own code only with trust_remote_code. Without it, a model whose model_type is built
into transformers loads with the built-in classes, and any other model fails to load. The portal trusts a model's
code only through a staff Model Override, so the check says which case a folder is in before anything trains.
"""

from __future__ import annotations

import functools
from pathlib import Path

from mtm.shared.problems import Problem

# The classes the trainer and the inference check ask transformers for.
LOADED_CLASSES = ("AutoConfig", "AutoModelForCausalLM", "AutoModel", "AutoTokenizer")


@functools.lru_cache(maxsize=1)
def built_in_model_types() -> frozenset[str]:
    """The model_types the installed transformers builds without a model's own code. Read from transformers' plain
    table of names, which imports neither torch nor any model (a listing checks every cached config with it)."""
    from transformers.models.auto.auto_mappings import CONFIG_MAPPING_NAMES

    return frozenset(CONFIG_MAPPING_NAMES)


@functools.lru_cache(maxsize=1)
def transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def unknown_model_type(config: dict, model_name: str | None, folder: Path) -> Problem | None:
    """A model_type the installed transformers has no classes for: without the model's own code nothing loads it."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type or model_type in built_in_model_types():
        return None
    return Problem(
        "model_type_unknown",
        f"Model '{model_name or folder}' has model_type {model_type!r}, which the installed transformers "
        f"{transformers_version()} does not know, and its config names no code of its own (auto_map) to load it.",
        "Choose a model whose architecture this transformers version supports, or ask the administrator to upgrade "
        "transformers to a version that knows this model_type.",
    )


@functools.lru_cache(maxsize=1)
def transformers_class_names() -> frozenset[str]:
    """Every class the installed transformers exports, from its lazy module's index (nothing is imported)."""
    import transformers

    return frozenset(dir(transformers))


def tokenizer_code_reference(tokenizer_config: dict | None) -> tuple[str, str] | None:
    """(tokenizer_class, code reference) when tokenizer_config.json asks for its own tokenizer code and names no
    class transformers has: AutoTokenizer then refuses to load it without trust_remote_code."""
    refs = code_references({}, tokenizer_config)
    if "AutoTokenizer" not in refs:
        return None
    cls = (tokenizer_config or {}).get("tokenizer_class")
    if isinstance(cls, str) and cls:
        base = cls.removesuffix("Fast")
        if {base, base + "Fast"} & transformers_class_names():
            return None  # a built-in class is named: transformers uses it and ignores the code
    return (cls if isinstance(cls, str) else "", refs["AutoTokenizer"])


def code_references(config: dict, tokenizer_config: dict | None) -> dict[str, str]:
    """Class name → code reference (`module.Class`, or `other/repo--module.Class`) from both files' auto_map."""
    refs: dict[str, str] = {}
    for source in (config, tokenizer_config or {}):
        auto_map = source.get("auto_map")
        if isinstance(auto_map, (list, tuple)):  # the old tokenizer_config form: [slow, fast]
            auto_map = {"AutoTokenizer": auto_map}
        if not isinstance(auto_map, dict):
            continue
        for cls, ref in auto_map.items():
            if cls not in LOADED_CLASSES:
                continue
            if isinstance(ref, (list, tuple)):  # AutoTokenizer: [slow, fast]; either may be null
                ref = next((r for r in reversed(ref) if isinstance(r, str) and r), None)
            if isinstance(ref, str) and ref:
                refs.setdefault(cls, ref)
    return refs


def _missing_code(folder: Path, refs: dict[str, str]) -> list[str]:
    missing = []
    for ref in refs.values():
        if "--" in ref:  # code kept in another Hub repo: fetched at load time, which offline cannot do
            missing.append(ref)
            continue
        module = ref.rsplit(".", 1)[0]
        if not (folder / (module.replace(".", "/") + ".py")).is_file():
            missing.append(f"{module}.py")
    return sorted(set(missing))


def _trust_hint(folder: Path, name: str) -> str:
    where = "in the admin (Model overrides) or with POST /api/v1/model-overrides"
    if folder.parent.name == "snapshots":  # a cache snapshot links into blobs/, which an override may not follow
        return (
            f"Staff can trust this model's code after reading it: copy the snapshot to a plain folder "
            f"(cp -rL {folder} <folder>) and add a Model Override for '{name}' pointing at it, with "
            f"'Trust remote code' ticked, {where}."
        )
    return (
        f"Staff can trust this model's code after reading it: give '{name}' a Model Override pointing at {folder} "
        f"with 'Trust remote code' ticked, {where}."
    )


def check_remote_code(
    folder: Path,
    config: dict,
    tokenizer_config: dict | None,
    *,
    trusted: bool,
    model_name: str | None,
) -> tuple[list[Problem], list[Problem]]:
    """Errors and warnings about the model's own code. `trusted`: a staff override allows that code to run."""
    refs = code_references(config, tokenizer_config)
    if not refs:
        problem = unknown_model_type(config, model_name, folder)
        return ([problem] if problem else []), []
    shown = ", ".join(f"{cls} → {ref}" for cls, ref in sorted(refs.items()))
    name = model_name or str(folder)
    if trusted:
        missing = _missing_code(folder, refs)
        if not missing:
            return [], []
        return [
            Problem(
                "remote_code_unavailable",
                f"The model's own code is trusted, but {', '.join(missing)} is not in {folder} (auto_map: {shown}). "
                "The portal loads models offline, so that code cannot be fetched.",
                f"Copy the code files of '{name}' into {folder}, or use a copy of the model that includes them.",
            )
        ], []
    model_type = config.get("model_type")
    trust_hint = _trust_hint(folder, name)
    if tokenizer := tokenizer_code_reference(tokenizer_config):
        cls, ref = tokenizer
        named = f"names tokenizer class {cls!r}, which" if cls else "names no tokenizer_class that"
        return [
            Problem(
                "remote_code_required",
                f"Model '{name}' needs its own Python code for its tokenizer: tokenizer_config.json {named} the "
                f"installed transformers {transformers_version()} does not have, and its auto_map points at "
                f"{ref} (in {folder}). That code is not trusted, so training would fail.",
                trust_hint + " Or use a copy of the model whose tokenizer_config.json names a transformers class.",
            )
        ], []
    if isinstance(model_type, str) and model_type in built_in_model_types():
        return [], [
            Problem(
                "remote_code_ignored",
                f"The model ships its own code (auto_map: {shown}), which will not run: transformers' built-in "
                f"'{model_type}' classes are used instead.",
                trust_hint + " Otherwise nothing to do if the built-in classes fit this model.",
            )
        ]
    return [
        Problem(
            "remote_code_required",
            f"Model '{name}' needs its own Python code to load (auto_map: {shown}; model_type "
            f"{model_type!r} is not built into the installed transformers {transformers_version()}), and that code is "
            "not trusted, so training would fail.",
            trust_hint + " Or choose a model whose architecture transformers supports.",
        )
    ], []
