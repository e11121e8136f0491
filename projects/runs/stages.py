"""What each Celery task does for a run: resolve, train, validate. Each returns True when the next stage should
be enqueued. Called with an id; a run that is gone or no longer in the expected state is left alone."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone
from pydantic import ValidationError

from models_registry.deep_state import overruled_on_worker
from models_registry.lookup import dataset_roots, resolve_model, validate_output_dir
from models_registry.models import ModelOverride
from models_registry.trainability import deep_training_refusal, training_refusal
from mtm.shared.owned_files import make_staging, remove_tree
from mtm.shared.problems import Problem
from projects.datasets import check_dataset_path, detect_format, inspect_dataset, prompt_text
from projects.datasets.chat_templates import with_chat_template
from projects.datasets.eval_split import eval_source_problems
from projects.datasets.pairs import PREFERENCE, objective_problem
from projects.datasets.streaming import first_rows, last_rows, row_count, rows_at
from projects.models import ENDED_STATUSES, RunStage, RunStatus, TrainingRun
from projects.ownership import output_dir_conflicts
from projects.runs import dataset_snapshot, paths, records
from projects.runs import manifest as run_manifest
from projects.runs.base_model_folder import HeldBaseModel, open_base_model
from projects.runs.columns import EvalPoint, MetricPoint, RunProgress, RunSummary, ValidationCheck
from projects.runs.config import RunConfig, run_config
from projects.runs.folder import RunFolderRefused
from projects.runs.state_machine import fail, transition, worker_identity
from projects.runs.supervisor import CANCEL_KILL_SECONDS, Supervision, supervise
from projects.runs.validation.checks import preference_check, validate_output
from projects.runs.validation.prompt import tokenizer_prompt
from projects.services import load_tokenizer
from projects.trainer.events import EXIT_CANCELLED, EXIT_OK, trainer_command
from projects.trainer.outputs import MANIFEST_NAME, RUN_MARKER
from projects.trainer.ranks import launcher_outcome, owned_devices
from projects.trainer.spec import TrainerSpec, spec_problem, write_spec

MAX_METRIC_POINTS = 2000
HOLD_OUT_MIN = 10  # rows a dataset needs before one is kept out of training to be the validation prompt


def held_out_pairs(wanted: int, rows: int) -> int:
    """Pairs kept out of a DPO run for the preference check: as many as asked, at most a fifth of the dataset."""
    return min(wanted, rows // 5)


def run_dir(run_id: int) -> Path:
    return records.work_folder(run_id)


def _problem_lines(problems: list[Problem]) -> str:
    return "\n".join(f"[{p.code}] {p.message} {p.hint}".strip() for p in problems)


def resolve_stage(run_id: int, taken: bool = False) -> bool:
    """Resolution fails explicitly before any training starts (no simulation fallback). `taken`: the worker has
    already moved the run to "resolving" (projects.runs.scheduling.fair_share.take)."""
    if taken:
        if not TrainingRun.objects.filter(pk=run_id, status=RunStatus.RESOLVING).exists():
            return False
    elif not transition(
        run_id, RunStatus.QUEUED, RunStatus.RESOLVING, started_at=timezone.now(), worker_host=worker_identity()
    ):
        return False
    run = TrainingRun.objects.select_related("project", "project__owner", "started_by").get(pk=run_id)
    project = run.project
    config = run_config(run)
    # transformers' verdict (cached per snapshot) overrules the instant errors it can judge
    resolution = overruled_on_worker(resolve_model(config.model_name, config.revision or None))
    if not resolution.valid:
        return not fail(run_id, RunStage.RESOLVE, resolution.errors[0], _problem_lines(resolution.errors))
    if refusal := training_refusal(resolution):
        return not fail(run_id, RunStage.RESOLVE, refusal)
    if refusal := deep_training_refusal(resolution):  # transformers' own verdict, cached per snapshot
        return not fail(run_id, RunStage.RESOLVE, refusal)
    dataset = check_dataset_path(config.dataset_path, dataset_roots())
    if not dataset.valid:
        return not fail(run_id, RunStage.RESOLVE, dataset.errors[0], _problem_lines(dataset.errors))
    # Read only through the path itself and only a file this member may use (the train stage's own rules).
    if problem := paths.dataset_problem(run, config.dataset_path):
        return not fail(run_id, RunStage.RESOLVE, problem)
    output = validate_output_dir(config.output_directory)
    if not output.valid:
        return not fail(run_id, RunStage.RESOLVE, output.errors[0], _problem_lines(output.errors))
    if conflicts := output_dir_conflicts(config.output_directory, run.started_by or project.owner, project):
        return not fail(run_id, RunStage.RESOLVE, conflicts[0], _problem_lines(conflicts))
    # From here on only the run's own copy of each file is read: what is checked is what is trained.
    folder = run_dir(run_id)
    resolved = False
    try:
        resolved = _resolve_on_snapshots(run, config, resolution, folder)
        return resolved
    finally:
        if not resolved:
            dataset_snapshot.drop_snapshot(folder)


def _resolve_on_snapshots(run: TrainingRun, config: RunConfig, resolution: Any, folder: Path) -> bool:
    """Copy the dataset (and eval file) into the run's work folder, check every row of the copies, and record their
    row counts and digests on the run with the resolved model. False once the run has failed."""
    run_id = run.pk
    try:
        dataset = dataset_snapshot.snapshot_dataset(run, folder)
    except paths.PathChanged as changed:
        return not fail(run_id, RunStage.RESOLVE, changed.problem)
    # The form and the API read only the start of a dataset; here every row is read, and tokenized, once.
    report = inspect_dataset(
        dataset,
        with_chat_template(load_tokenizer(resolution), config.values.chat_template),
        config.values.max_seq_length,
        full=True,
        model=f"'{config.model_name}'",
        max_prompt_length=config.values.prompt_limit,
    )
    if report.valid and (mismatch := objective_problem(config.values.objective, report.format, config.dataset_path)):
        report.errors.append(mismatch)
    if not report.valid:
        return not fail(run_id, RunStage.RESOLVE, report.errors[0], _problem_lines(report.errors))
    config.dataset_rows = report.rows
    config.dataset_sha256 = report.sha256 or dataset_snapshot.snapshot_sha256(dataset)
    if config.eval_dataset_path and (problems := _eval_file_problems(run, config, resolution, folder)):
        return not fail(run_id, RunStage.RESOLVE, problems[0], _problem_lines(problems))
    TrainingRun.objects.filter(pk=run_id).update(
        config=config.model_dump(),
        resolved_source=resolution.source or "",
        resolved_path=resolution.path or "",
        resolved_revision=resolution.revision or "",
    )
    return True


def _eval_file_problems(run: TrainingRun, config: RunConfig, resolution: Any, folder: Path) -> list[Problem]:
    """The eval file copied and checked as the dataset is (every row of the copy read); its row count and digest are
    recorded on `config`."""
    values = config.values
    if source := eval_source_problems(values.objective, values.eval_fraction, config.eval_dataset_path):
        return source
    located = check_dataset_path(config.eval_dataset_path, dataset_roots())
    if not located.valid:
        return located.errors
    if problem := paths.dataset_problem(run, config.eval_dataset_path):
        return [problem]
    try:
        copy = dataset_snapshot.snapshot_eval_dataset(run, folder)
    except paths.PathChanged as changed:
        return [changed.problem]
    assert copy is not None  # the run has an eval file
    report = inspect_dataset(
        copy,
        with_chat_template(load_tokenizer(resolution), values.chat_template),
        values.max_seq_length,
        full=True,
        model=f"'{config.model_name}'",
        max_prompt_length=values.prompt_limit,
    )
    if report.valid and (mismatch := objective_problem(values.objective, report.format, config.eval_dataset_path)):
        report.errors.append(mismatch)
    config.eval_dataset_rows = report.rows
    config.eval_dataset_sha256 = report.sha256 or dataset_snapshot.snapshot_sha256(copy)
    return report.errors


def _trust_remote_code(run: TrainingRun) -> bool:
    """Only a staff-set, enabled override may allow a model's own code to run."""
    if run.resolved_source != "override":
        return False
    return ModelOverride.objects.filter(
        model_name=run_config(run).model_name, enabled=True, trust_remote_code=True
    ).exists()


class _RunRecorder:
    """Turns trainer events into row updates (events arrive at most about once a second)."""

    def __init__(self, run_id: int, history: list[dict[str, Any]] | None = None):
        self.run_id = run_id
        # MetricPoint dicts, as stored; a resumed run starts with its source run's points up to the checkpoint.
        self.metrics: list[dict[str, Any]] = list(history or [])
        self.progress: dict[str, Any] = {}

    def on_event(self, event: dict) -> None:
        kind = event["event"]
        rows = TrainingRun.objects.filter(pk=self.run_id)
        if kind == "started":
            self.progress = RunProgress(
                step=event.get("global_step", 0), total_steps=event.get("total_steps")
            ).model_dump()
            rows.update(
                device=str(event.get("device", ""))[:255],
                progress=self.progress,
                resumed_from=event.get("resumed_from") or "",
                heartbeat_at=timezone.now(),
            )
        elif kind == "progress":
            progress = self.progress = RunProgress.model_validate(event).model_dump()
            if event.get("logged") and event.get("loss") is not None:  # a fresh loss, not a repeat of the last
                self.metrics.append(MetricPoint.model_validate(event).model_dump())
                if len(self.metrics) > MAX_METRIC_POINTS:
                    self.metrics = self.metrics[::2]
            rows.update(progress=progress, metrics=self.metrics, heartbeat_at=timezone.now())
        elif kind == "evaluation":
            point = EvalPoint.model_validate(event)
            if point.eval_loss is not None:  # a loss that was not a finite number is no point of the curve
                self.metrics.append(point.model_dump())
                rows.update(metrics=self.metrics, heartbeat_at=timezone.now())
        elif kind == "finished":
            rows.update(summary=RunSummary.read(event.get("metrics")).model_dump())
        elif kind == "checkpoint":
            rows.update(last_checkpoint=str(event.get("path", "")))
        elif kind == "cancelled":
            # The step the run stopped at is its checkpoint's step: progress may have been reported a step or two
            # earlier, and must not say otherwise once the run has ended.
            stopped = RunProgress.read({**self.progress, "step": event.get("step"), "eta_seconds": None}).model_dump()
            fields: dict[str, Any] = {"progress": stopped} if stopped["step"] is not None else {}
            if event.get("checkpoint"):
                fields["last_checkpoint"] = str(event["checkpoint"])
            if fields:
                rows.update(**fields)

    def on_tick(self, tail: str) -> None:
        TrainingRun.objects.filter(pk=self.run_id).update(log_tail=tail, heartbeat_at=timezone.now())

    def should_cancel(self) -> bool:
        return TrainingRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()


def train_stage(run_id: int) -> bool:
    if not transition(
        run_id,
        RunStatus.RESOLVING,
        RunStatus.TRAINING,
        heartbeat_at=timezone.now(),
        worker_host=worker_identity(),
        worker_pid=os.getpid(),
    ):
        if TrainingRun.objects.filter(pk=run_id, status__in=ENDED_STATUSES).exists():  # cancelled after resolve
            dataset_snapshot.drop_snapshot(run_dir(run_id))
        return False
    run = TrainingRun.objects.select_related("project", "project__owner", "started_by").get(pk=run_id)
    folder = run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    # Both paths are resolved and checked again now, and opened without following links: a folder or file
    # swapped for a link since the run started is refused, not written through or read.
    if problem := paths.recheck(run):
        dataset_snapshot.drop_snapshot(folder)
        fail(run_id, RunStage.TRAIN, problem)
        return False
    try:
        output_fd = paths.create_run_folder(run)  # made here, exclusively: an existing folder is never adopted
    except paths.PathChanged as changed:
        dataset_snapshot.drop_snapshot(folder)
        fail(run_id, RunStage.TRAIN, changed.problem)
        return False
    # The trainer starts inside this opened folder and writes only relative to it: a folder swapped for a link
    # (or another folder) while it trains cannot redirect a write or a checkpoint rotation elsewhere. What the
    # libraries save by path goes to a private staging folder first (projects.trainer.saving).
    staging = make_staging(output_fd)
    try:
        return _train_in(run, folder, output_fd, staging)
    finally:
        with contextlib.suppress(OSError):
            remove_tree(output_fd, staging)  # what a stopped or crashed trainer left half-written
        os.close(output_fd)


def _train_in(run: TrainingRun, folder: Path, output_fd: int, staging: str) -> bool:
    run_id = run.pk
    config = run_config(run)
    # The copies the resolve stage took and checked, still as they were then: the trainer reads nothing else.
    if problem := dataset_snapshot.snapshot_problem(config, folder):
        dataset_snapshot.drop_snapshot(folder)
        fail(run_id, RunStage.TRAIN, problem)
        return False
    dataset = dataset_snapshot.dataset_snapshot(folder, config.dataset_path)
    eval_source = config.eval_dataset_path
    eval_dataset = dataset_snapshot.eval_snapshot(folder, eval_source) if eval_source else None
    # Without a prompt of its own, validation asks the dataset's last row, which is then not trained on.
    config.held_out_row = not config.validation_prompt.strip() and (config.dataset_rows or 0) >= HOLD_OUT_MIN
    if config.values.objective == "dpo":  # DPO holds out pairs at the end instead (the last one gives the prompt)
        config.held_out_row = False
        config.held_out_pairs = held_out_pairs(config.values.preference_pairs, config.dataset_rows or 0)
    devices = config.values.devices
    owned = owned_devices()
    if owned is not None and owned < devices:  # placement sends it only to such a worker; a stale message may not
        dataset_snapshot.drop_snapshot(folder)
        fail(run_id, RunStage.TRAIN, _too_few_devices(devices, owned))
        return False
    try:  # the base model is read through what the worker opens now (its files as checked), never by its path
        base = open_base_model(run)
    except RunFolderRefused as refused:
        dataset_snapshot.drop_snapshot(folder)
        fail(run_id, RunStage.TRAIN, refused.problem)
        return False
    with base:
        try:  # the checkpoint is read through a folder opened now, never through its path again
            resume_fd = paths.open_resume_checkpoint(run) if run.resume and run.resumed_from else None
        except paths.PathChanged as changed:
            dataset_snapshot.drop_snapshot(folder)
            fail(run_id, RunStage.TRAIN, changed.problem)
            return False
        try:
            return _train_with(run, config, folder, output_fd, staging, dataset, eval_dataset, resume_fd, base)
        finally:
            if resume_fd is not None:
                os.close(resume_fd)


def _train_with(
    run: TrainingRun,
    config: RunConfig,
    folder: Path,
    output_fd: int,
    staging: str,
    dataset: Path,
    eval_dataset: Path | None,
    resume_fd: int | None,
    base: HeldBaseModel,
) -> bool:
    run_id = run.pk
    devices = config.values.devices
    TrainingRun.objects.filter(pk=run_id).update(config=config.model_dump())
    cancel_file = folder / "cancel"
    cancel_file.unlink(missing_ok=True)
    # A folder the worker holds open, by a path the trainer (and each of its ranks) can read while it runs.
    resume_from = f"/proc/{os.getpid()}/fd/{resume_fd}" if resume_fd is not None else run.resumed_from or "latest"
    try:  # what the child will refuse, refused here before anything starts
        spec = TrainerSpec(
            model_path=base.path_for(os.getpid()),
            model_shown=run.resolved_path,
            model_name=config.model_name,
            revision=run.resolved_revision,
            trust_remote_code=_trust_remote_code(run),
            dataset_path=dataset,
            eval_dataset_path=eval_dataset,
            output_dir=run.run_folder,
            output_in_cwd=True,
            method=config.method,
            hyperparameters=config.hyperparameters,
            # A resume whose checkpoint vanished after Start fails in the trainer ("no_checkpoint"), never starts fresh.
            # The checkpoint is the one picked at Start (in the source run's folder); "latest" only for older rows.
            resume_from_checkpoint=resume_from if run.resume else None,
            resume_shown=run.resumed_from or None,
            cancel_file=cancel_file,
            device=os.environ.get("MTM_TRAIN_DEVICE", "auto"),
            hold_out_last_row=config.held_out_row,
            held_out_pairs=config.held_out_pairs,
            staging_dir=staging,
            max_row_bytes=settings.MTM_DATASET_MAX_ROW_BYTES,
            max_rows=settings.MTM_DATASET_MAX_ROWS,
        )
    except ValidationError as invalid:
        dataset_snapshot.drop_snapshot(folder)
        fail(run_id, RunStage.TRAIN, spec_problem(invalid))
        return False
    # A marker file, not the folder's existence or inode: the trainer recreates a deleted folder at its
    # next save, and the filesystem may hand the new folder the old inode number.
    paths.write_marker(output_fd, RUN_MARKER, f"{run_id}\n")
    manifest_is_ours = run_manifest.drop_manifest(output_fd)  # a manifest found after the trainer is then its own
    spec_path = write_spec(spec, folder / "spec.json")
    recorder = _RunRecorder(run_id, records.history_before_resume(run))
    output_dir = run.run_folder

    def health() -> Problem | None:
        if os.path.realpath(output_dir) != output_dir:
            return paths.output_changed(output_dir)
        try:
            marked = stat.S_ISREG(os.stat(RUN_MARKER, dir_fd=output_fd, follow_symlinks=False).st_mode)
        except OSError:
            marked = False
        if not marked:
            return Problem(
                "output_directory_vanished",
                f"The output directory {output_dir} disappeared during training (deleted or unmounted).",
                "Restore or recreate the directory (and its checkpoints, if you have them), then start the run again.",
            )
        disk = os.statvfs(output_fd)
        free = disk.f_bavail * disk.f_frsize
        if free < settings.MTM_MIN_FREE_BYTES:
            return Problem(
                "disk_full",
                f"The disk of {output_dir} is nearly full ({free / 1024**2:.0f} MiB free, under the "
                f"{settings.MTM_MIN_FREE_BYTES / 1024**2:.0f} MiB that training keeps free); training was "
                "stopped before a checkpoint could be cut short.",
                f"Free space on that disk (check with: df -h {output_dir}), or move the project's output "
                "directory to a larger disk, then resume.",
            )
        return None

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(settings.BASE_DIR), env.get("PYTHONPATH", "")) if p)
    outcome = supervise(
        trainer_command(spec_path, sys.executable, devices),
        cwd=Path(settings.BASE_DIR),
        cwd_fd=output_fd,
        env=env,
        cancel_file=cancel_file,
        log_path=folder / "trainer.log",
        sup=Supervision(
            on_event=recorder.on_event, should_cancel=recorder.should_cancel, on_tick=recorder.on_tick, health=health
        ),
    )
    TrainingRun.objects.filter(pk=run_id).update(log_tail=outcome.tail)
    # On several devices torchrun exits 1 for any rank's exit, and every rank may report an error: which one is it.
    outcome.returncode, outcome.last_error = launcher_outcome(
        outcome.returncode, outcome.cancelled is not None, outcome.errors, outcome.tail, devices
    )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(RUN_MARKER, dir_fd=output_fd)  # in the folder trained in, not wherever the path leads now
    finished = outcome.returncode == EXIT_OK and outcome.finished
    written = None
    if not finished and manifest_is_ours and outcome.stopped_for is None and outcome.returncode != EXIT_CANCELLED:
        written = run_manifest.written_manifest(output_fd)
    if outcome.stopped_for is not None or not (finished or written):
        dataset_snapshot.drop_snapshot(folder)  # validation reads it for a prompt; nothing else will
    if outcome.stopped_for is not None:
        fail(run_id, RunStage.TRAIN, outcome.stopped_for)
        return False
    if finished:
        return True
    if written is not None:
        _validate_after_late_exit(run_id, outcome, written, folder)
        return True
    if outcome.returncode == EXIT_CANCELLED or outcome.killed_after_cancel:
        if outcome.killed_after_cancel:  # what the member asked for, forced: not a crash, not the OOM killer
            note = f"Cancelled: the trainer did not stop by itself within {CANCEL_KILL_SECONDS} s and was killed."
            TrainingRun.objects.filter(pk=run_id).update(log_tail=f"{outcome.tail}\n{note}")
        transition(run_id, RunStatus.TRAINING, RunStatus.CANCELLED, finished_at=timezone.now())
        return False
    fail(run_id, RunStage.TRAIN, _child_failure(outcome), (outcome.last_error or {}).get("traceback", ""))
    return False


def _validate_after_late_exit(run_id: int, outcome, manifest: dict[str, Any], folder: Path) -> None:
    """The trainer (or one of its ranks) died after writing the final model and its manifest, e.g. killed while
    shutting down: the result is on disk whole, so it goes to validation, which loads it and asks it to generate,
    as for any run. The log says so; the summary comes from the manifest when no "finished" event came."""
    note = (
        f"The trainer ended badly after it had written the final model and {MANIFEST_NAME} (finished at "
        f"{manifest.get('finished_at')}): {_child_failure(outcome).message} Validating the model it wrote."
    )
    with contextlib.suppress(OSError), open(folder / "trainer.log", "a", encoding="utf-8") as log:
        log.write(note + "\n")
    fields: dict[str, Any] = {"log_tail": f"{outcome.tail}\n{note}"}
    if outcome.finished is None:
        with contextlib.suppress(ValueError):
            fields["summary"] = RunSummary.read(manifest.get("metrics")).model_dump()
    TrainingRun.objects.filter(pk=run_id).update(**fields)


def _too_few_devices(devices: int, owned: int) -> Problem:
    return Problem(
        "too_few_devices",
        f"This run asks for {devices} devices and the worker that took it ({worker_identity()}) owns {owned}.",
        f"Start a worker that owns {devices} (runworker --gpus with {devices} indexes, or --cpu --processes "
        f"{devices}), or set the project's devices to {owned}; then start the run again.",
    )


def _child_failure(outcome) -> Problem:
    if outcome.last_error:
        e = outcome.last_error
        return Problem(e.get("code") or "training_failed", e.get("message") or "Training failed.", e.get("hint") or "")
    code = outcome.returncode
    if code < 0:
        signame = {9: "SIGKILL", 15: "SIGTERM", 11: "SIGSEGV", 6: "SIGABRT"}.get(-code, f"signal {-code}")
        why = " — usually the kernel's out-of-memory killer" if code == -9 else ""
        return Problem(
            "trainer_killed",
            f"The training process was killed by {signame}{why}.",
            "Lower batch_size or max_seq_length, or train with LoRA; then resume from the latest checkpoint.",
        )
    return Problem(
        "training_failed",
        f"The training process exited with code {code} without saying why.",
        "See the log tail; resume from the latest checkpoint once the cause is fixed.",
    )


def _snapshot_path(run: TrainingRun) -> Path:
    return dataset_snapshot.dataset_snapshot(run_dir(run.pk), run_config(run).dataset_path)


def _snapshot_rows(run: TrainingRun) -> list[dict]:
    """The rows validation takes from the dataset snapshot the trainer read, never the project's path again (a link
    planted there since is not followed): the held-out pairs or row at its end, else its first row. Only those are
    held: the file may have millions of rows."""
    config = run_config(run)
    snapshot, limit = _snapshot_path(run), settings.MTM_DATASET_MAX_ROW_BYTES
    if config.held_out_pairs or config.held_out_row:
        return last_rows(snapshot, config.held_out_pairs or 1, max_row_bytes=limit)
    return first_rows(snapshot, 1, max_row_bytes=limit)


def _validation_prompt(run: TrainingRun, rows: list[dict] | None, folder_fd: int) -> str:
    """The project's validation prompt, else one from the row not trained on (`rows`: the snapshot's, read when None).
    A row that needs the run's tokenizer reads it from `folder_fd`, the run folder checked and held open, by
    descriptor (projects.runs.validation.prompt); any problem falls back to the default prompt."""
    config = run_config(run)
    if config.validation_prompt.strip():
        return config.validation_prompt
    try:
        rows = rows if rows is not None else _snapshot_rows(run)
        if config.held_out_row or config.held_out_pairs:
            rows = rows[-1:]
        fmt = detect_format(rows[:1])
        if fmt in (PREFERENCE, "messages"):
            return tokenizer_prompt(folder_fd, rows[0], fmt)
        return prompt_text(rows[0], fmt) or rows[0].get("text", "")[:200]
    except Exception:  # the dataset and tokenizer are only a source of a prompt here
        return ""


MAX_BEFORE_AFTER_ROWS = (
    200  # eval rows passed to the validation child (projects.runs.validation.before_after.MAX_LOSS_ROWS)
)


def _before_after_rows(run: TrainingRun) -> dict | None:
    """The eval rows the base and the fine-tuned model are compared on: the run's eval set (the snapshot of its eval
    file, or the same seeded split as the trainer's), else the held-out last row; None without either, or with
    eval_prompts and eval set both off."""
    from projects.datasets import detect_format
    from projects.datasets.eval_split import eval_indices

    config = run_config(run)
    values = config.values
    if values.eval_prompts == 0 and values.eval_fraction == 0 and not config.eval_dataset_path:
        return None
    limit = settings.MTM_DATASET_MAX_ROW_BYTES
    if config.eval_dataset_path:  # the file's first rows: the trainer evaluated on every row of it
        try:
            eval_file = dataset_snapshot.eval_snapshot(run_dir(run.pk), config.eval_dataset_path)
            eval_rows = first_rows(eval_file, MAX_BEFORE_AFTER_ROWS, max_row_bytes=limit)
            fmt = detect_format(eval_rows[:1])
        except Exception:  # the file is only a source of prompts here; without it there is no comparison
            return None
        return _before_after(eval_rows, fmt, values)
    snapshot = _snapshot_path(run)
    try:  # the trainer's split (the same count, share and seed), counted first so only the rows compared are held
        count = row_count(snapshot, max_row_bytes=limit)
        held_out = 1 if config.held_out_row and count else 0
        picked = eval_indices(count - held_out, values.eval_fraction, values.seed)[:MAX_BEFORE_AFTER_ROWS]
        rows = (
            rows_at(snapshot, picked, max_row_bytes=limit)
            if picked
            else last_rows(snapshot, held_out, max_row_bytes=limit)
        )
        fmt = detect_format(rows[:1])
    except Exception:  # the dataset is only a source of prompts here; without it there is no comparison
        return None
    return _before_after(rows, fmt, values)


def _before_after(eval_rows: list[dict], fmt: str, values: Any) -> dict | None:
    if not eval_rows:
        return None
    return {
        "rows": eval_rows[:MAX_BEFORE_AFTER_ROWS],
        "format": fmt,
        "hyperparameters": values.to_dict(),  # the prompts to answer, and how the trainer cut and batched its eval
    }


def validate_stage(run_id: int) -> None:
    if not transition(run_id, RunStatus.TRAINING, RunStatus.VALIDATING):
        return
    run = TrainingRun.objects.select_related("project", "project__owner", "started_by").get(pk=run_id)
    try:  # swapped since training: read nothing through the new path
        if problem := paths.output_problem(run):
            raise paths.PathChanged(problem)
        folder_fd = paths.reopen_run_folder(run)  # the very folder the train stage created, or nothing
    except paths.PathChanged as changed:
        dataset_snapshot.drop_snapshot(run_dir(run_id))
        fail(run_id, RunStage.VALIDATE, changed.problem)
        return
    try:
        try:  # the base the model is compared with (or an adapter loaded on): the folder the run trained from
            base = open_base_model(run)
        except RunFolderRefused as refused:
            dataset_snapshot.drop_snapshot(run_dir(run_id))
            fail(run_id, RunStage.VALIDATE, refused.problem)
            return
        with base:
            _validate_in(run, folder_fd, base)
    finally:
        os.close(folder_fd)


# What to do when a validation check fails, by check; the files, json and load checks fail on what was saved.
VALIDATION_REMEDIES = {
    "inference": (
        "the model gave no usable answer to the validation prompt: write that prompt in the form the dataset's rows "
        "take (its chat template or text layout), or train longer (more steps, a higher learning rate),"
    ),
    "preference": (
        "the model does not yet prefer the chosen answers of the held-out pairs: train longer or with a higher "
        "learning rate, or check that chosen and rejected are not swapped in the pairs file,"
    ),
}


def validation_failed(check: ValidationCheck) -> Problem:
    """The run's error when validation `check` failed, with the remedy for that check."""
    remedy = VALIDATION_REMEDIES.get(check.name, "fix the cause (often disk space or an interrupted save)")
    return Problem(
        "validation_failed",
        f"Post-training validation failed: the {check.name} check did not pass: {check.detail}",
        f"Open the validation report on the run page; {remedy} and start a new run.",
    )


def _validate_in(run: TrainingRun, folder_fd: int, base: HeldBaseModel) -> None:
    run_id = run.pk
    config = run_config(run)
    rows: list[dict] | None = None  # read only when a prompt or held-out pairs come from it
    if config.held_out_pairs or not config.validation_prompt.strip():
        try:
            rows = _snapshot_rows(run)
        except Exception:  # the dataset is only a source of a prompt and of held-out pairs here
            rows = []
    prompt = _validation_prompt(run, rows, folder_fd)
    before_after = None if config.values.objective == "dpo" else _before_after_rows(run)  # DPO: the preference check
    dataset_snapshot.drop_snapshot(run_dir(run_id))
    report = validate_output(
        run.run_folder,
        prompt,
        base_model_path=run.resolved_path,
        trust_remote_code=_trust_remote_code(run),
        before_after=before_after,
        folder_fd=folder_fd,
        base_fd=base.fd,
    )
    if config.held_out_pairs and report.passed:
        check, found = preference_check(
            run.run_folder,
            (rows or [])[-config.held_out_pairs :],
            base_model_path=run.resolved_path,
            trust_remote_code=_trust_remote_code(run),
            folder_fd=folder_fd,
            base_fd=base.fd,
        )
        report.checks.append(check)
        report.preference = found
        report.passed = report.passed and check.passed
    TrainingRun.objects.filter(pk=run_id).update(validation=report.model_dump())
    failed = report.first_failure
    if failed is None:
        transition(run_id, RunStatus.VALIDATING, RunStatus.SUCCEEDED, finished_at=timezone.now())
        return
    fail(run_id, RunStage.VALIDATE, validation_failed(failed))
