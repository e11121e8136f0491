"""One training run inside the child process: load the model, build the data, train, save, report.

Returns the exit code; raises TrainerError (or anything else) for the caller to report as an "error" event.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from mtm.shared.files import file_sha256
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
from projects.trainer.device import Placement, choose_placement, configure_threads
from projects.trainer.errors import TrainerError
from projects.trainer.evaluation import EvalReporter, evaluation_arguments, keep_best
from projects.trainer.events import EXIT_CANCELLED, EXIT_OK
from projects.trainer.outputs import MANIFEST_NAME, library_versions, save_final
from projects.trainer.progress import Emit, EvaluationCancelled, ProgressReporter
from projects.trainer.saving import (
    StagedCheckpoints,
    drop_staging,
    prepare_staging,
    save_final_staged,
    staging_path,
    write_output_file,
)
from projects.trainer.spec import TrainerSpec


class NothingLeftToTrain(TrainerCallback):
    """Refuses a resume whose checkpoint has already reached the run's last step: it would train nothing and then
    save the checkpoint's model as if this run had trained it."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            raise TrainerError(
                "nothing_to_resume",
                f"Nothing left to train: {self.checkpoint.name} is already at step {state.global_step}, and this "
                f"run ends at step {state.max_steps}.",
                f"Raise max_steps (or epochs) so the run ends past step {state.global_step}, or start a fresh run.",
            )
        return control


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
    hp = spec.hyperparameters
    started_at = _now()
    if spec.cancel_file is not None and spec.cancel_file.exists():
        emit("cancelled", step=0, checkpoint=None)
        return EXIT_CANCELLED
    placement = choose_placement(spec.device, hp.precision)
    threads = configure_threads(per_rank=placement.use_cpu)
    set_seed(hp.seed)

    clock = time.monotonic()
    tokenizer, model, base_dtype = load_model(spec, placement)
    model_load = time.monotonic() - clock
    spec, clamped_from = within_context(spec, model.config)
    hp = spec.hyperparameters

    clock = time.monotonic()
    examples, eval_examples, data_info = build_datasets(spec, tokenizer)
    if clamped_from is not None:
        data_info["max_seq_length_clamped_from"] = clamped_from
    dataset_seconds = time.monotonic() - clock

    setup_started = time.monotonic()
    if spec.method == "lora":
        model = apply_lora(model, hp)
    prepare_staging(spec)
    collator_class = PackedCollator if hp.packing else PaddedCollator
    trainer = PortalTrainer(
        model=model,
        args=training_arguments(spec, placement, has_eval_set=bool(eval_examples)),
        train_dataset=examples,
        eval_dataset=eval_examples or None,
        data_collator=collator_class(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    trainer.mtm_spec = spec
    trainer.remove_callback(PrinterCallback)  # our events replace its printed log dicts
    if resume is not None:
        trainer.add_callback(
            NothingLeftToTrain(Path(_shown(spec, resume)))
        )  # before the reporter, so no "started" is reported
    reporter = ProgressReporter(
        emit,
        interval=spec.progress_interval,
        cancel_file=spec.cancel_file,
        real_tokens=lambda: trainer.real_tokens_seen,
        started_fields={
            "device": ranks.device_label(placement.label),
            "ranks": ranks.world_size(),
            "precision": placement.precision,
            "threads": threads,
            "method": spec.method,
            "resumed_from": _shown(spec, resume),
            **data_info,
            "timings": {
                "imports": round(imports_seconds, 3),
                "model_load": round(model_load, 3),
                "dataset": round(dataset_seconds, 3),
            },
        },
        setup_started=setup_started,
        output_dir=spec.output_dir,
    )
    stopper: Any = reporter  # what a SIGTERM asks to stop
    if ranks.world_size() > 1:  # before the reporter: the ranks agree on cancelling and on the tokens counted
        stopper = ranks.rank_sync_callback(reporter, lambda: trainer.real_tokens_seen)
        trainer.add_callback(stopper)
    trainer.add_callback(reporter)
    if not ranks.faults_here():
        reporter.fault_at_step = 0
    evaluations = EvalReporter(emit, keep_best=hp.keep_best_eval)
    if eval_examples:
        trainer.add_callback(evaluations)
    signal.signal(signal.SIGTERM, lambda *_: setattr(stopper, "cancel_requested", True))

    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except EvaluationCancelled:
        result = None  # no checkpoint of this step: the latest one saved before is where a resume starts
    if reporter.cancelled_at_step is not None:
        emit("cancelled", step=reporter.cancelled_at_step, checkpoint=reporter.last_checkpoint)
        return EXIT_CANCELLED
    if not ranks.is_main():  # rank 0 alone writes the model and the manifest
        return EXIT_OK

    best_step = keep_best(trainer, evaluations)
    layout = save_final_staged(
        spec, lambda path: save_final(trainer.model, tokenizer, path, spec.method, hp.merge_after_training, base_dtype)
    )
    runtime = float(result.metrics.get("train_runtime") or 0.0)
    metrics = {
        "global_step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
        "train_loss": result.training_loss,
        "final_loss": reporter.loss,
        "train_runtime": runtime,
        "real_tokens": reporter.real_tokens(),  # every rank's
        "tokens_per_second": reporter.real_tokens() / runtime if runtime > 0 else None,
        "steady_tokens_per_second": reporter.session_tokens_per_second(),
        "eval_loss": evaluations.last_loss,
        "best_eval_step": evaluations.best_step,
        "best_eval_loss": evaluations.best_loss,
        "result_step": best_step or trainer.state.global_step,  # the step whose weights were saved as the result
    }
    return finish(
        spec,
        emit,
        data_info,
        metrics,
        reporter.history,
        layout,
        resume,
        started_at,
        eval_history=evaluations.history,
        device=ranks.device_label(placement.label),
        ranks=ranks.world_size(),
        effective_batch=hp.effective_batch,
        precision=placement.precision,
    )


FAULT_KILL_AFTER_MANIFEST_ENV = "MTM_FAULT_KILL_AFTER_MANIFEST"


def finish(
    spec: TrainerSpec,
    emit: Emit,
    data_info: dict[str, Any],
    metrics: dict[str, Any],
    loss_history: list,
    layout: dict[str, Any],
    resume: Path | None,
    started_at: str,
    *,
    versions: dict[str, str] | None = None,
    **facts: Any,
) -> int:
    """Write the run's manifest next to its model and report "finished" (SFT and DPO alike); `facts` are the
    manifest's objective-specific entries."""
    manifest = {
        "format": 1,
        "base_model": {"name": spec.model_name, "revision": spec.revision, "path": spec.model_named},
        "method": spec.method,
        "dataset": {"path": str(spec.dataset_path), "sha256": file_sha256(spec.dataset_path), **data_info},
        "eval_dataset": None
        if spec.eval_dataset_path is None
        else {"path": str(spec.eval_dataset_path), "sha256": file_sha256(spec.eval_dataset_path)},
        "hyperparameters": spec.hyperparameters.to_dict(),
        "metrics": metrics,
        "loss_history": loss_history,
        "layout": layout,
        "resumed_from": _shown(spec, resume),
        **facts,
        "versions": versions or library_versions(),
        "started_at": started_at,
        "finished_at": _now(),
    }
    manifest_path = write_output_file(spec, MANIFEST_NAME, json.dumps(manifest, indent=2, default=str).encode())
    drop_staging(spec)
    if os.environ.get(FAULT_KILL_AFTER_MANIFEST_ENV):  # fault tests, rehearsals: die once the result is whole
        os.kill(os.getpid(), signal.SIGKILL)
    emit(
        "finished",
        metrics=metrics,
        output_dir=str(spec.output_dir),
        model_dir=_absolute(spec.output_dir, layout["model_dir"]),
        adapter_dir=_absolute(spec.output_dir, layout["adapter_dir"]),
        manifest=str(manifest_path),
    )
    return EXIT_OK


def load_model(spec: TrainerSpec, placement: Placement) -> tuple[Any, Any, torch.dtype | None]:
    """Tokenizer and model. Weights load as fp32 (mixed precision keeps fp32 master weights), except a LoRA
    base on a GPU, which stays frozen and loads in the compute dtype. `.bin` weights load with
    weights_only=True only. Returns the base's own dtype too, for saving a full model the same size."""
    path = str(spec.model_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
        base_dtype = getattr(config, "dtype", None)
        if isinstance(base_dtype, str):
            base_dtype = getattr(torch, base_dtype, None)
        dtype = torch.float32
        if spec.method == "lora" and not placement.use_cpu and placement.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if placement.precision == "bf16" else torch.float16
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=dtype, trust_remote_code=spec.trust_remote_code, weights_only=True
        )
    except pickle.UnpicklingError:
        raise TrainerError(
            "weights_invalid",
            f"Model format invalid: the .bin weights of '{spec.model_name}' in {spec.model_named} hold more than tensors "
            "(pickled objects that could run code), so they were not loaded (torch.load with weights_only=True).",
            "Use a copy of the model with .safetensors weights (most Hub models ship them), or convert the .bin "
            "file to safetensors on a trusted machine.",
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TrainerError(
            "model_load_failed",
            f"Could not load model '{spec.model_name}' from {spec.model_named}: {str(exc).replace(path, spec.model_named)}",
            "Validate the model again (its files may be damaged or incomplete) and re-download it if needed.",
        )
    model.config.use_cache = False  # training needs no KV cache, and with one packed examples would see each other
    # What the saved config and an adapter's config name as the base: the folder as the member knows it, not the
    # descriptor's path it was read by.
    model.config.name_or_path = model.name_or_path = tokenizer.name_or_path = spec.model_named
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise TrainerError(
                "model_format_invalid",
                f"Model format invalid: the tokenizer of '{spec.model_name}' has neither a pad nor an eos token.",
                "Use a model whose tokenizer defines an eos token (batches must be padded with something).",
            )
        tokenizer.pad_token = tokenizer.eos_token
    if base_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        base_dtype = None
    return tokenizer, model, base_dtype


def within_context(spec: TrainerSpec, config: Any) -> tuple[TrainerSpec, int | None]:
    """The spec with max_seq_length cut to the model's context length when it is longer (a longer sequence would
    run past the positions the model was trained on), and the value it had; (spec, None) when it fits."""
    context = getattr(config, "max_position_embeddings", None)
    wanted = spec.hyperparameters.max_seq_length
    if not isinstance(context, int) or isinstance(context, bool) or context <= 0 or wanted <= context:
        return spec, None
    print(
        f"max_seq_length {wanted} is above the context length of '{spec.model_name}' ({context} tokens): "
        f"sequences are cut at {context}.",
        file=sys.stderr,
        flush=True,
    )
    hyperparameters = spec.hyperparameters.model_copy(update=dict(max_seq_length=context))
    return dataclasses.replace(spec, hyperparameters=hyperparameters), wanted


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


def _absolute(output_dir: Path, relative: str | None) -> str | None:
    return None if relative is None else os.path.normpath(output_dir / relative)


def _shown(spec: TrainerSpec, resume: Path | None) -> str | None:
    """The checkpoint as the user knows it: the spec's resume_shown (the worker passes the checkpoint as a folder it
    opened), else under the output directory's path (resume may be relative to ".")."""
    if resume is None:
        return None
    return spec.resume_shown or str(spec.output_dir / resume)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
