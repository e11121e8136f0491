"""The one training loop of the trainer child, for every objective: a cancel before the start, the base model, the
objective's data and Trainer, progress, checkpoints and a cancel as events, the final model saved through staging,
the manifest and the "finished" event.

An objective (SFT in projects.trainer.run, DPO in projects.trainer.dpo) says how its data and its Trainer are built
and what its events, metrics and manifest add; the rest happens here, the same way for both.
Returns the exit code; raises TrainerError (or anything else) for the caller to report as an "error" event.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback, set_seed

from mtm.shared.files import file_sha256
from projects.trainer import ranks
from projects.trainer.base_model import load_model, within_context
from projects.trainer.device import Placement, choose_placement, configure_threads
from projects.trainer.errors import TrainerError
from projects.trainer.events import EXIT_CANCELLED, EXIT_OK
from projects.trainer.outputs import MANIFEST_NAME, library_versions, save_final
from projects.trainer.progress import Emit, EvaluationCancelled, ProgressReporter
from projects.trainer.saving import drop_staging, prepare_staging, save_final_staged, write_output_file
from projects.trainer.spec import TrainerSpec


class Objective:
    """What one training objective adds to the loop. `build_data` and `build_trainer` are its own; the other
    hooks add nothing unless it says so."""

    logged_fields: dict[str, str] = {}  # further Trainer log keys that become event fields (log key -> field)

    def build_data(self, spec: TrainerSpec, tokenizer: Any) -> dict[str, Any]:
        """Build (and keep) the training data; returns what the "started" event and the manifest say of it."""
        raise NotImplementedError

    def build_trainer(
        self, spec: TrainerSpec, model: Any, tokenizer: Any, placement: Placement, data_info: dict[str, Any]
    ) -> Any:
        """The Trainer, with a `real_tokens_seen` count and StagedCheckpoints; may add to `data_info`."""
        raise NotImplementedError

    def started_fields(self) -> dict[str, Any]:
        return {}

    def add_callbacks(self, trainer: Any, emit: Emit) -> None:
        """Callbacks after the progress reporter."""

    def before_save(self, trainer: Any) -> None:
        """Once training has ended well, before the final model is saved."""

    def metrics(self, reporter: ProgressReporter) -> dict[str, Any]:
        return {}

    def manifest_facts(self, spec: TrainerSpec) -> dict[str, Any]:
        return {}

    def versions(self) -> dict[str, str] | None:
        return None


def train_objective(
    objective: Objective, spec: TrainerSpec, emit: Emit, imports_seconds: float, resume: Path | None = None
) -> int:
    """Train as the spec says; `resume` is the checkpoint folder (outputs.resolve_resume) or None."""
    hp = spec.hyperparameters
    started_at = now()
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
    data_info = objective.build_data(spec, tokenizer)
    if clamped_from is not None:
        data_info["max_seq_length_clamped_from"] = clamped_from
    dataset_seconds = time.monotonic() - clock

    setup_started = time.monotonic()
    prepare_staging(spec)
    trainer = objective.build_trainer(spec, model, tokenizer, placement, data_info)
    trainer.mtm_spec = spec
    trainer.remove_callback(PrinterCallback)  # our events replace its printed log dicts
    if resume is not None:  # before the reporter, so no "started" is reported
        trainer.add_callback(NothingLeftToTrain(Path(shown(spec, resume))))
    device = ranks.device_label(placement.label)
    reporter = ProgressReporter(
        emit,
        interval=spec.progress_interval,
        cancel_file=spec.cancel_file,
        real_tokens=lambda: trainer.real_tokens_seen,
        started_fields={
            "device": device,
            "precision": placement.precision,
            "threads": threads,
            "method": spec.method,
            **objective.started_fields(),
            "resumed_from": shown(spec, resume),
            **data_info,
            "timings": {
                "imports": round(imports_seconds, 3),
                "model_load": round(model_load, 3),
                "dataset": round(dataset_seconds, 3),
            },
        },
        setup_started=setup_started,
        output_dir=spec.output_dir,
        logged_fields=objective.logged_fields,
    )
    stopper: Any = reporter  # what a SIGTERM asks to stop
    if ranks.world_size() > 1:  # before the reporter: the ranks agree on cancelling and on the tokens counted
        stopper = ranks.rank_sync_callback(reporter, lambda: trainer.real_tokens_seen)
        trainer.add_callback(stopper)
    trainer.add_callback(reporter)
    if not ranks.faults_here():
        reporter.fault_at_step = 0
    objective.add_callbacks(trainer, emit)
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

    objective.before_save(trainer)
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
        **objective.metrics(reporter),
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
        versions=objective.versions(),
        **objective.manifest_facts(spec),
        device=device,
        precision=placement.precision,
    )


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
        "resumed_from": shown(spec, resume),
        **facts,
        "versions": versions or library_versions(),
        "started_at": started_at,
        "finished_at": now(),
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


def _absolute(output_dir: Path, relative: str | None) -> str | None:
    return None if relative is None else os.path.normpath(output_dir / relative)


def shown(spec: TrainerSpec, resume: Path | None) -> str | None:
    """The checkpoint as the user knows it: the spec's resume_shown (the worker passes the checkpoint as a folder it
    opened), else under the output directory's path (resume may be relative to ".")."""
    if resume is None:
        return None
    return spec.resume_shown or str(spec.output_dir / resume)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
