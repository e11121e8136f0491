"""Which vocabulary a model's tokenizer would be built from, decided from file names and tokenizer_config.json.

transformers builds a tokenizer from the first source it can use: tokenizer.json (the `tokenizers` library's file,
usable whatever the class), tokenizer.model (a sentencepiece model, which needs the sentencepiece and protobuf
packages), or the vocabulary files the tokenizer class itself reads (vocab.json + merges.txt, vocab.txt...).
Without any of them it does not always fail: transformers 5 may build a tokenizer holding only the special tokens,
and every sentence then encodes to nothing, so training would learn from empty examples. A folder with no source
this installation can load is refused; otherwise the check names the source used.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Container

from mtm.shared.problems import Problem

SENTENCEPIECE_FILE = "tokenizer.model"
# What transformers' default tokenizer class (TokenizersBackend) reads when tokenizer_config.json names no class.
DEFAULT_VOCAB_FILES = ("tokenizer.json", SENTENCEPIECE_FILE)


@functools.lru_cache(maxsize=1)
def sentencepiece_missing() -> tuple[str, ...]:
    """The packages a sentencepiece tokenizer needs here and that are not installed."""
    needed = {"sentencepiece": "sentencepiece", "protobuf": "google.protobuf"}
    missing = []
    for package, module in needed.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    return tuple(missing)


@functools.lru_cache(maxsize=256)
def class_vocab_files(tokenizer_class: str) -> tuple[str, ...] | None:
    """The files the named tokenizer class reads, or None when the installed transformers has no such class.
    Imported only for folders without tokenizer.json: the class's module is transformers' own code, not the model's."""
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    try:
        cls = tokenizer_class_from_name(tokenizer_class)
    except (ImportError, AttributeError, ValueError):
        cls = None
    if cls is None:
        return None
    return tuple(str(v) for v in (getattr(cls, "vocab_files_names", None) or {}).values())


def vocabulary_source(
    present: Container[str], tokenizer_config: dict | None, model_name: str | None, hint: str
) -> tuple[str | None, Problem | None]:
    """(source, None) naming the files the tokenizer would be built from, or (None, the reason there is none)."""
    if "tokenizer.json" in present:
        return "tokenizer.json", None
    tokenizer_class = (tokenizer_config or {}).get("tokenizer_class")
    if not isinstance(tokenizer_class, str) or not tokenizer_class:
        tokenizer_class = None
    files = class_vocab_files(tokenizer_class) if tokenizer_class else DEFAULT_VOCAB_FILES
    shown_class = tokenizer_class or "the default tokenizer class"
    if files is None:
        return None, Problem(
            "tokenizer_no_vocabulary",
            f"Model '{model_name}': tokenizer_config.json names tokenizer class {tokenizer_class!r}, which the "
            "installed transformers does not have, and there is no tokenizer.json to build the tokenizer from.",
            hint,
        )
    if SENTENCEPIECE_FILE in files and SENTENCEPIECE_FILE in present:
        if missing := sentencepiece_missing():
            return None, Problem(
                "tokenizer_unloadable",
                f"Model '{model_name}': the tokenizer's vocabulary is only tokenizer.model (sentencepiece), which "
                f"needs {' and '.join(missing)}, not installed on this server.",
                f"Ask the administrator to install {' and '.join(missing)} (see requirements.txt), or use a copy of "
                "the model that includes tokenizer.json.",
            )
        return "tokenizer.model (sentencepiece)", None
    own = [f for f in files if f not in ("tokenizer.json", SENTENCEPIECE_FILE)]
    if own and all(f in present for f in own):
        return " + ".join(own), None
    expected = ["tokenizer.json", *([SENTENCEPIECE_FILE] if SENTENCEPIECE_FILE in files else [])]
    if own:
        expected.append(" + ".join(own))
    return None, Problem(
        "tokenizer_no_vocabulary",
        f"Model '{model_name}': the tokenizer has no vocabulary. {shown_class} needs one of "
        f"{', '.join(expected)}, and none is in the folder; transformers would build a tokenizer of special tokens "
        "only and every example would encode to nothing.",
        hint,
    )
