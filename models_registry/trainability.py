"""Whether a valid model can also be trained: it needs weights transformers reads (safetensors or .bin).

A model without them can still be inspected (its tokenizer, its config), so the resolver calls it valid with a
warning; every place that starts training (the project form and API, the resolve stage) refuses it with this.
"""

from __future__ import annotations

from models_registry.not_a_model import gguf_files
from models_registry.resolution import Resolution
from mtm.shared.problems import Problem

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def training_refusal(resolution: Resolution) -> Problem | None:
    """None when the resolved model has weights to train; otherwise why not (naming GGUF files if that is all)."""
    names = [f.name for f in resolution.files]
    if any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        return None
    name = resolution.model_name
    ggufs = gguf_files(names)
    only = f"; it has only GGUF weights ({', '.join(ggufs[:3])}), which transformers cannot fine-tune" if ggufs else ""
    return Problem(
        "no_weights",
        f"Model '{name}' has no weights (*.safetensors or *.bin) in {resolution.path}{only}: it cannot be trained.",
        f"Download the full model: hf download {name}"
        + (" (the original repo, not its GGUF conversion)" if ggufs else ""),
    )


def deep_training_refusal(resolution: Resolution) -> Problem | None:
    """transformers' own refusal of a resolved model (models_registry.deep_verdict), from the cache or computed now.
    For workers only (the resolve stage): computing it loads transformers in a limited child process."""
    from models_registry.deep_verdict import deep_verdict

    return deep_verdict(resolution).first_error()
