"""Whether config.json describes the checkpoint beside it, judged from safetensors headers (names and shapes only).

transformers builds the model the config describes and then fills it from the checkpoint: a tensor of another
shape stops the load, and a tensor the checkpoint lacks is left random, so training would start from noise. The
few tensors compared here are the ones every decoder has under well-known names: the token embedding (vocabulary
size × hidden size), the numbered layers, and the output head when it is not tied to the embedding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from mtm.shared.problems import Problem

EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "embed_in.weight", "word_embeddings.weight")
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")
# Decoder families whose checkpoints use the names above and whose embedding is hidden_size wide. Others are judged
# on the vocabulary size only (OPT-350m, for one, projects a 512-wide embedding to a 1024 hidden size).
KNOWN_LAYOUTS = frozenset(
    {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "olmo",
        "olmo2",
        "granite",
        "gpt2",
        "gpt_neox",
        "bloom",
        "falcon",
        "starcoder2",
    }
)


def _int(config: Mapping, *keys: str) -> tuple[str, int] | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return key, value
    return None


def _embedding(shapes: Mapping[str, Sequence[int]]) -> tuple[str, Sequence[int]] | None:
    for name in sorted(shapes):
        if name.endswith(EMBEDDING_SUFFIXES) and len(shapes[name]) == 2:
            return name, shapes[name]
    return None


def compare_config_with_weights(
    config: Mapping, shapes: Mapping[str, Sequence[int]], weights: str, hint: str
) -> list[Problem]:
    """Disagreements between config.json and the tensors named in `shapes` (read from `weights`)."""
    problems: list[Problem] = []
    model_type = config.get("model_type")
    known = model_type in KNOWN_LAYOUTS

    def refuse(detail: str) -> None:
        problems.append(
            Problem(
                "config_weights_mismatch",
                f"config.json and the weights disagree: {detail} ({weights}). transformers would refuse to load "
                "them or leave those weights random.",
                hint + " If you edited config.json, restore the one that came with these weights.",
            )
        )

    embedding = _embedding(shapes)
    if embedding is None:
        if known:
            problems.append(
                Problem(
                    "weights_missing_tensors",
                    f"The weights hold no token embedding (no tensor named *{' or *'.join(EMBEDDING_SUFFIXES)}) "
                    f"for a {model_type} model ({weights}): they are not this model's weights, or are incomplete.",
                    hint,
                )
            )
        return problems
    name, (rows, width) = embedding
    if (vocab := _int(config, "vocab_size")) and vocab[1] != rows:
        refuse(f"vocab_size is {vocab[1]}, but {name} has {rows} rows")
    if known and (hidden := _int(config, "hidden_size", "n_embd")) and hidden[1] != width:
        refuse(f"{hidden[0]} is {hidden[1]}, but {name} is {width} wide")
    if known and (layers := _int(config, "num_hidden_layers", "n_layer")):
        found = {int(m.group(1)) for key in shapes if (m := LAYER_INDEX.search(key))}
        if len(found) != layers[1]:
            refuse(f"{layers[0]} is {layers[1]}, but the weights hold {len(found)} layers")
    tied = config.get("tie_word_embeddings", True)
    if known and tied is False and not any(k.endswith("lm_head.weight") for k in shapes):
        problems.append(
            Problem(
                "weights_missing_tensors",
                f"The weights hold no lm_head.weight, and config.json says tie_word_embeddings is false, so the "
                f"output layer would start random ({weights}).",
                hint,
            )
        )
    return problems
