"""A DPO run inside the trainer child process: TRL's DPOTrainer on preference pairs, trained by the shared loop
(projects.trainer.loop) with the events, cancel, resume, saving and manifest an SFT run has.

The reference the loss compares against is the base model as it was loaded: with LoRA, the same model with the
adapter disabled (TRL does this when it is given the LoRA config: no second copy in memory); with a full
fine-tune, a frozen copy of the loaded weights, made before training changes them.
Returns the exit code; raises TrainerError (or anything else) for the caller to report as an "error" event.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer

from projects.datasets.chat_templates import BUILT_IN
from projects.datasets.pairs import PREFERENCE, split_pair
from projects.trainer.device import Placement
from projects.trainer.errors import TrainerError
from projects.trainer.loop import Objective, train_objective
from projects.trainer.outputs import library_versions
from projects.trainer.progress import Emit, ProgressReporter
from projects.trainer.run import lora_config, lora_targets_error, training_arguments
from projects.trainer.saving import StagedCheckpoints
from projects.trainer.spec import TrainerSpec

# TRL's logged metrics that the run page charts, and the names our events and metric points give them.
DPO_LOGGED = {
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
}


class PortalDPOTrainer(StagedCheckpoints, DPOTrainer):
    """TRL's DPOTrainer with each pair's prompt cut to its last `prompt_limit` tokens (the end, next to the
    answers), counting the prompts it cut. Real tokens are TRL's own count (non-padding tokens of both sequences
    of every pair trained on)."""

    def __init__(self, *args: Any, prompt_limit: int | None = None, **kwargs: Any) -> None:
        self.prompt_limit = prompt_limit  # read by _prepare_dataset, which DPOTrainer.__init__ calls
        self.prompts_cut = 0
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        limit = self.prompt_limit
        if not limit:
            return dataset
        self.prompts_cut += sum(1 for ids in dataset["prompt_ids"] if len(ids) > limit)
        return dataset.map(lambda example: {"prompt_ids": example["prompt_ids"][-limit:]})

    @property
    def real_tokens_seen(self) -> int:
        return int(self._total_train_tokens)


def _messages(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def build_pairs(spec: TrainerSpec, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """The dataset's pairs as TRL takes them ({prompt, chosen, rejected}, all text or all messages), less the
    held-out ones at its end; and what the manifest and the "started" event say of them."""
    from datasets import Dataset

    from projects.datasets import DatasetError, detect_format, load_rows
    from projects.datasets.examples import cut_to_length

    hp = spec.hyperparameters
    if hp.chat_template in BUILT_IN:  # set on the tokenizer itself: the saved model carries the template too
        tokenizer.chat_template = BUILT_IN[hp.chat_template]
    try:
        rows = load_rows(spec.dataset_path, max_row_bytes=spec.max_row_bytes, max_rows=spec.max_rows)
        fmt = detect_format(rows)
    except DatasetError as exc:
        raise TrainerError.from_problems(exc.problems)
    if fmt != PREFERENCE:
        raise TrainerError(
            "dataset_not_pairs",
            f"{spec.dataset_path} holds '{fmt}' rows, but the DPO objective trains on preference pairs.",
            "Use a dataset of pairs (prompt, chosen, rejected), or set the training objective to sft.",
        )
    total = len(rows)
    held_out = min(spec.held_out_pairs, max(total - 1, 0))
    pairs = []
    for row in cut_to_length(rows[: total - held_out], hp.max_seq_length):  # TRL tokenizes each whole, then cuts
        prompt, chosen, rejected = split_pair(row)
        if isinstance(prompt, list):
            prompt, chosen, rejected = _messages(prompt), _messages(chosen), _messages(rejected)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    info = {
        "format": fmt,
        "dataset_rows": total,
        "examples": len(pairs),
        "training_rows": len(pairs),
        "held_out_rows": held_out,
    }
    return Dataset.from_list(pairs), info


def dpo_arguments(spec: TrainerSpec, placement: Any) -> DPOConfig:
    hp = spec.hyperparameters
    return training_arguments(
        spec,
        placement,
        DPOConfig,
        beta=hp.dpo_beta,
        loss_type=[hp.dpo_loss_type],
        max_length=hp.max_seq_length,
        trust_remote_code=spec.trust_remote_code,
        precompute_ref_log_probs=False,
        dataset_num_proc=None,
    )


def run_dpo_training(spec: TrainerSpec, emit: Emit, imports_seconds: float, resume: Path | None = None) -> int:
    """Train as the spec says with DPO; `resume` is the checkpoint folder (outputs.resolve_resume) or None."""
    return train_objective(PreferenceObjective(), spec, emit, imports_seconds, resume)


class PreferenceObjective(Objective):
    """The pairs of a DPO run, its reference model, TRL's reward metrics, and the DPO facts of its manifest."""

    logged_fields = DPO_LOGGED

    def __init__(self) -> None:
        self.pairs: Any = None
        self.reference = "base model with the adapter disabled"
        self.facts: dict[str, Any] = {}

    def build_data(self, spec: TrainerSpec, tokenizer: Any) -> dict[str, Any]:
        self.pairs, info = build_pairs(spec, tokenizer)
        return info

    def build_trainer(
        self, spec: TrainerSpec, model: Any, tokenizer: Any, placement: Placement, data_info: dict[str, Any]
    ) -> Any:
        hp = spec.hyperparameters
        ref_model = None
        if spec.method == "full":
            self.reference = "frozen copy of the base model"
            ref_model = copy.deepcopy(model).eval()
            ref_model.requires_grad_(False)
            if not placement.use_cpu and placement.precision in ("bf16", "fp16"):  # it is only ever run forward
                ref_model = ref_model.to(torch.bfloat16 if placement.precision == "bf16" else torch.float16)
        try:
            trainer = PortalDPOTrainer(
                prompt_limit=hp.prompt_limit,
                model=model,
                ref_model=ref_model,
                args=dpo_arguments(spec, placement),
                train_dataset=self.pairs,
                processing_class=tokenizer,
                peft_config=lora_config(hp) if spec.method == "lora" else None,
            )
        except ValueError as exc:
            if spec.method == "lora" and "target" in str(exc).lower():
                raise lora_targets_error(hp, exc)
            raise
        data_info["prompts_truncated"] = trainer.prompts_cut
        self.facts = {"beta": hp.dpo_beta, "loss_type": hp.dpo_loss_type, "prompt_tokens_kept": hp.prompt_limit}
        return trainer

    def started_fields(self) -> dict[str, Any]:
        return {"objective": "dpo", "reference": self.reference}

    def before_save(self, trainer: Any) -> None:
        trainer.ref_model = None  # the frozen copy is not saved; free it before the final save

    def metrics(self, reporter: ProgressReporter) -> dict[str, Any]:
        return {f"final_{name}": value for name, value in reporter.logged.items()}

    def manifest_facts(self, spec: TrainerSpec) -> dict[str, Any]:
        return {"objective": "dpo", "dpo": {**self.facts, "reference": self.reference, "trl": _trl_version()}}

    def versions(self) -> dict[str, str] | None:
        return {**library_versions(), "trl": _trl_version()}


def _trl_version() -> str:
    import trl

    return trl.__version__
