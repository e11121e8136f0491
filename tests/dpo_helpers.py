"""For the DPO tests: projects that train with the DPO objective through a worker, and specs for the DPO trainer
child."""

from __future__ import annotations

from pathlib import Path

from projects.datasets.samples import sample_pairs
from projects.models import TrainingProject
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, write_jsonl
from tests.trainer_helpers import spec_of

# A DPO project's settings: a handful of steps on short pairs.
DPO_PROJECT = {**FAST_HYPERPARAMETERS, "objective": "dpo", "max_steps": 4, "preference_pairs": 4, "max_seq_length": 48}

# The DPO trainer child's settings in a spec (tests.trainer_helpers runs the child).
DPO_SPEC = {
    "objective": "dpo",
    "max_steps": 4,
    "learning_rate": 0.01,
    "batch_size": 4,
    "max_seq_length": 48,
    "logging_steps": 1,
    "save_steps": 1000,
}


def dpo_project(portal, model_name, name, hyper=None, method="lora"):
    """A DPO project of the `portal` fixture's member on 20 sample pairs, DPO_PROJECT updated with `hyper`."""
    root = portal["root"]
    return TrainingProject.objects.create(
        name=name,
        owner=portal["user"],
        model_name=model_name,
        dataset_path=str(write_jsonl(root / "datasets" / f"{name}.jsonl", sample_pairs(20))),
        dataset_format="preference",
        output_directory=str(root / "outputs" / name),
        method=method,
        hyperparameters={**DPO_PROJECT, **(hyper or {})},
    )


def dpo_spec(model: Path, data: Path, out: Path, method: str, held_out: int = 0, **hyper) -> dict:
    """A spec for the DPO trainer child, as the supervisor writes it, read back as a JSON object."""
    return spec_of(model, data, out, method, {**DPO_SPEC, **hyper}, held_out_pairs=held_out)
