"""Supervised fine-tuning in the trainer child: the dataset's examples (loss on the completions or assistant turns),
an eval set when the run has one, LoRA or every weight; trained by the shared loop (projects.trainer.loop).

Also the pieces the DPO objective shares: the Trainer's arguments and the LoRA configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer, TrainingArguments

from projects.datasets.chat_templates import BUILT_IN
from projects.hyperparameters import ALL_LINEAR, Hyperparameters
from projects.trainer import ranks
from projects.trainer.batching import (
    REAL_TOKENS_KEY,
    PackedCollator,
    PaddedCollator,
    pack_examples,
    trainable_examples,
)
from projects.trainer.device import Placement
from projects.trainer.errors import TrainerError
from projects.trainer.evaluation import EvalReporter, evaluation_arguments, keep_best
from projects.trainer.loop import Objective, train_objective
from projects.trainer.progress import Emit, ProgressReporter
from projects.trainer.saving import StagedCheckpoints, staging_path
from projects.trainer.spec import TrainerSpec


class PortalTrainer(StagedCheckpoints, Trainer):
    """transformers Trainer that counts real (non-padding) tokens from the collator's CPU-side count, and saves its
    checkpoints through the staging folder (projects.trainer.saving)."""

    real_tokens_seen = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.real_tokens_seen += int(inputs.pop(REAL_TOKENS_KEY, 0))
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop(REAL_TOKENS_KEY, None)  # eval batches are not training throughput
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def run_training(spec: TrainerSpec, emit: Emit, imports_seconds: float, resume: Path | None = None) -> int:
    """Train as the spec says; `resume` is the checkpoint folder (outputs.resolve_resume) or None."""
    return train_objective(SupervisedObjective(), spec, emit, imports_seconds, resume)


class SupervisedObjective(Objective):
    """The examples and eval set of an SFT run, its eval reports, and the best checkpoint by eval loss kept as the
    result when keep_best_eval asks for it."""

    def __init__(self) -> None:
        self.examples: list[dict[str, list[int]]] = []
        self.eval_examples: list[dict[str, list[int]]] = []
        self.hp = Hyperparameters()
        self.trainer: Any = None
        self.evaluations: EvalReporter | None = None
        self.best_step: int | None = None

    def build_data(self, spec: TrainerSpec, tokenizer: Any) -> dict[str, Any]:
        self.examples, self.eval_examples, info = build_datasets(spec, tokenizer)
        return info

    def build_trainer(
        self, spec: TrainerSpec, model: Any, tokenizer: Any, placement: Placement, data_info: dict[str, Any]
    ) -> Any:
        self.hp = hp = spec.hyperparameters
        if spec.method == "lora":
            model = apply_lora(model, hp)
        collator_class = PackedCollator if hp.packing else PaddedCollator
        self.trainer = PortalTrainer(
            model=model,
            args=training_arguments(spec, placement, has_eval_set=bool(self.eval_examples)),
            train_dataset=self.examples,
            eval_dataset=self.eval_examples or None,
            data_collator=collator_class(tokenizer.pad_token_id),
            processing_class=tokenizer,
        )
        return self.trainer

    def started_fields(self) -> dict[str, Any]:
        return {"ranks": ranks.world_size()}

    def add_callbacks(self, trainer: Any, emit: Emit) -> None:
        self.evaluations = EvalReporter(emit, keep_best=self.hp.keep_best_eval)
        if self.eval_examples:
            trainer.add_callback(self.evaluations)

    def before_save(self, trainer: Any) -> None:
        self.best_step = keep_best(trainer, self.evaluations)

    def metrics(self, reporter: ProgressReporter) -> dict[str, Any]:
        evaluations = self.evaluations
        return {
            "eval_loss": evaluations.last_loss,
            "best_eval_step": evaluations.best_step,
            "best_eval_loss": evaluations.best_loss,
            "result_step": self.best_step or self.trainer.state.global_step,  # the step whose weights were saved
        }

    def manifest_facts(self, spec: TrainerSpec) -> dict[str, Any]:
        return {
            "eval_history": self.evaluations.history,
            "ranks": ranks.world_size(),
            "effective_batch": self.hp.effective_batch,
        }


def build_training_data(spec: TrainerSpec, tokenizer: Any) -> tuple[list[dict[str, list[int]]], dict[str, Any]]:
    """Rows -> tokenized examples (loss only on completions / assistant turns) -> optional packing."""
    data, _, info = build_datasets(spec, tokenizer)
    return data, info


def build_datasets(
    spec: TrainerSpec, tokenizer: Any
) -> tuple[list[dict[str, list[int]]], list[dict[str, list[int]]], dict[str, Any]]:
    """The training examples, the eval set's (empty without one: the rows of the separate eval file, or those
    projects.datasets.eval_split picks from the dataset) and what the "started" event says about both."""
    from projects.datasets import DatasetError, build_examples, detect_format, load_rows
    from projects.datasets.eval_split import split_rows

    hp = spec.hyperparameters
    if hp.chat_template in BUILT_IN:  # set on the tokenizer itself: the saved model carries the template too
        tokenizer.chat_template = BUILT_IN[hp.chat_template]
    try:
        rows = load_rows(spec.dataset_path, max_row_bytes=spec.max_row_bytes, max_rows=spec.max_rows)
        total = len(rows)
        held_out = 1 if spec.hold_out_last_row and total > 1 else 0
        rows = rows[: total - held_out]  # the last row is the validation prompt: the model never sees it
        fmt = detect_format(rows)
        if spec.eval_dataset_path is not None:  # every dataset row trains; the file's own format is its own
            eval_rows = load_rows(spec.eval_dataset_path, max_row_bytes=spec.max_row_bytes, max_rows=spec.max_rows)
            eval_fmt = detect_format(eval_rows)
        else:
            rows, eval_rows = split_rows(rows, hp.eval_fraction, hp.seed)
            eval_fmt = fmt
        examples = build_examples(rows, fmt, tokenizer, hp.max_seq_length)
        eval_examples = build_examples(eval_rows, eval_fmt, tokenizer, hp.max_seq_length) if eval_rows else []
    except DatasetError as exc:
        raise TrainerError.from_problems(exc.problems)
    eval_kept = trainable_examples(eval_examples, hp.max_seq_length)
    kept = trainable_examples(examples, hp.max_seq_length)
    if not kept:
        raise TrainerError(
            "dataset_empty",
            f"No example in {spec.dataset_path} has a token to learn after truncation to "
            f"max_seq_length = {hp.max_seq_length}.",
            "Raise max_seq_length, or shorten the prompts so the completions fit.",
        )
    data = pack_examples(kept, hp.max_seq_length) if hp.packing else kept
    info = {
        "format": fmt,
        "dataset_rows": total,
        "examples": len(kept),
        "skipped_examples": len(rows) - len(kept),  # nothing left to learn once truncated
        "truncated_examples": getattr(examples, "truncated", 0),
        "training_rows": len(data),
        "packing": hp.packing,
        "held_out_rows": held_out,
        "eval_rows": len(eval_rows),
        "eval_examples": len(eval_kept),
        "eval_source": "file" if spec.eval_dataset_path is not None else ("fraction" if eval_rows else "none"),
    }
    eval_data = pack_examples(eval_kept, hp.max_seq_length) if hp.packing and eval_kept else eval_kept
    return data, eval_data, info


def lora_config(hp: Hyperparameters) -> Any:
    from peft import LoraConfig

    targets = hp.lora_target_modules
    return LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=ALL_LINEAR if targets == ALL_LINEAR else list(targets),
        task_type="CAUSAL_LM",
    )


def lora_targets_error(hp: Hyperparameters, exc: Exception) -> TrainerError:
    targets = hp.lora_target_modules
    return TrainerError(
        "invalid_hyperparameter",
        f"Hyperparameter 'lora_target_modules' = {targets!r} does not fit this model: {exc}",
        f'Use \'{ALL_LINEAR}\' or names of the model\'s linear layers, e.g. ["q_proj", "v_proj"] for Llama.',
    )


def apply_lora(model: Any, hp: Hyperparameters) -> Any:
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(hp))
    except ValueError as exc:
        raise lora_targets_error(hp, exc)


def training_arguments(
    spec: TrainerSpec,
    placement: Placement,
    args_class: type = TrainingArguments,
    has_eval_set: bool = False,
    **extra: Any,
) -> TrainingArguments:
    """The Trainer's arguments from the spec; `args_class` a TrainingArguments subclass (TRL's DPOConfig) taking
    `extra` too."""
    hp = spec.hyperparameters
    return args_class(
        output_dir=str(staging_path(spec)),  # the Trainer writes by path: only in the private staging folder
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps if hp.max_steps > 0 else -1,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        learning_rate=hp.learning_rate,
        warmup_steps=hp.warmup_steps if hp.warmup_steps > 0 else hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        seed=hp.seed,
        bf16=placement.precision == "bf16",
        fp16=placement.precision == "fp16",
        use_cpu=placement.use_cpu,
        activation_checkpointing=hp.gradient_checkpointing,  # transformers 5's name (non-reentrant by default)
        logging_strategy="steps",
        logging_steps=hp.logging_steps,
        save_strategy="steps",
        save_steps=hp.save_steps,
        save_total_limit=hp.save_total_limit or None,
        use_cache=False,  # also what lets packed rows get their block-diagonal attention (see batching.py)
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **evaluation_arguments(has_eval_set, hp.eval_steps, hp.batch_size, hp.keep_best_eval),
        **extra,
    )
