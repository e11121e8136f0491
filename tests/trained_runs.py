"""Runs of the tiny Llama trained once per test session by a real worker, and per-test copies of them.

Pages, comparison, publishing and the playground need a run that succeeded, not a training of their own. A recipe
(LORA, FULL) is trained once per session through a real Celery worker, into a portal root of its own; what the
session keeps is the run's folder and the values of its project and run rows, since a test's database is emptied
after it. `copy_trained_run` makes a test's own run from them: the rows recreated for the test's member and
database, the folder created by the worker's own function (projects.runs.paths.create_run_folder, which records
its identity on the row) and filled with a copy of the session's files, with every path under the session's root
moved under the test's.

Under pytest-xdist the processes of a session share the trained runs (a lock file decides which process trains a
recipe; the others wait and read what it recorded), so each recipe trains once per session, not once per process.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from models_registry.demo import install_into_cache
from models_registry.models import PortalSettings
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.folder import run_folder_problem
from projects.runs.paths import create_run_folder
from projects.runs.records import run_folder
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, start, wait_for_end, write_jsonl
from tests.workers import WORKER_QUEUES, CeleryWorker

TINY_LLAMA = "test-org/tiny-llama"  # the name tests/conftest.py's tiny_llama_in_cache lays the model under
DATASET = Path("datasets") / "train.jsonl"  # 24 rows, three kinds
EVAL_FILE = Path("datasets") / "eval" / "train.jsonl"  # the same file name in another folder
EVAL_ROWS = [
    {"prompt": "Question: what is three plus three? Answer:", "completion": " six."},
    {"prompt": "Say goodbye:", "completion": " Goodbye world!"},
    {"prompt": "Finish: an apple a day", "completion": " keeps the doctor away."},
    {"prompt": "Question: what colour is the sky? Answer:", "completion": " blue."},
    {"prompt": "Count to three:", "completion": " one, two, three."},
]
TEXT_SUFFIXES = (".json", ".md")
TAKEN_TIMEOUT = 120.0  # seconds until the idle session worker takes the run (a lost task fails here, not later)
TRAINING_TIMEOUT = 900.0  # seconds: two CPUs shared with the other test process


@dataclass(frozen=True)
class Recipe:
    name: str  # the project's name and its folder under outputs/
    method: str
    hyperparameters: dict[str, Any]
    eval_file: bool  # a separate eval file (EVAL_FILE) rather than a share of the dataset


# A LoRA run merged after training, evaluated on a separate file every 4 steps, keeping its best checkpoint.
LORA = Recipe(
    "lora-eval-file",
    "lora",
    {
        **FAST_HYPERPARAMETERS,
        "max_steps": 8,
        "save_steps": 4,
        "learning_rate": 0.02,
        "eval_steps": 4,
        "eval_prompts": 2,
        "keep_best_eval": True,
    },
    eval_file=True,
)
# A full fine-tune holding a quarter of the dataset out to evaluate on every 4 steps.
FULL = Recipe(
    "full-eval-share",
    "full",
    {
        **FAST_HYPERPARAMETERS,
        "max_steps": 8,
        "learning_rate": 0.02,
        "eval_fraction": 0.25,
        "eval_steps": 4,
        "eval_prompts": 2,
    },
    eval_file=False,
)

# Row fields a copy never takes from the session: its own keys and links, and the identities of folders that are
# the session's (the copy's run folder records its own when it is created).
_NOT_COPIED = {"id", "owner_id", "project_id", "started_by_id", "resume_source_id", "output_dir_identity"}
_NOT_COPIED_RUN = _NOT_COPIED | {"run_folder", "run_folder_identity"}


@dataclass(frozen=True)
class TrainedRun:
    """A run trained for the session: its portal root, and its project's and its own row values (JSON-ready)."""

    recipe: str
    root: str
    project: dict[str, Any]
    run: dict[str, Any]

    @property
    def folder(self) -> Path:
        return Path(self.run["run_folder"])

    @property
    def project_output(self) -> str:
        return self.project["output_directory"]


def _values(row: models.Model, skipped: set[str]) -> dict[str, Any]:
    fields = (field.attname for field in row._meta.concrete_fields)
    values = {name: getattr(row, name) for name in fields if name not in skipped}
    return json.loads(json.dumps(values, cls=DjangoJSONEncoder))


def _rows_of(values: dict[str, Any], model: type[models.Model]) -> dict[str, Any]:
    """`values` as the model's fields take them (datetimes parsed back)."""
    times = {f.attname for f in model._meta.concrete_fields if isinstance(f, models.DateTimeField)}
    return {name: parse_datetime(value) if name in times and value else value for name, value in values.items()}


def trained_once(recipe: Recipe, shared: Path, tiny_llama_dir: Path, redis_url: str, django_db_blocker) -> TrainedRun:
    """The session's run of `recipe`: trained by this process unless another process of the session did already."""
    shared.mkdir(parents=True, exist_ok=True)
    record = shared / f"{recipe.name}.json"
    with open(shared / f"{recipe.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not record.exists():
            with django_db_blocker.unblock():
                trained = _train(recipe, shared / recipe.name, tiny_llama_dir, redis_url)
            record.write_text(json.dumps(asdict(trained)))
        return TrainedRun(**json.loads(record.read_text()))


def _train(recipe: Recipe, root: Path, tiny_llama_dir: Path, redis_url: str) -> TrainedRun:
    shutil.rmtree(root, ignore_errors=True)  # what a failed try of another process left
    cache = root / "hf-cache" / "hub"
    install_into_cache(tiny_llama_dir, cache, TINY_LLAMA)
    (root / "outputs").mkdir(parents=True)
    dataset = write_jsonl(root / DATASET, QA_ROWS * 8)
    eval_file = write_jsonl(root / EVAL_FILE, EVAL_ROWS) if recipe.eval_file else None
    try:
        row = PortalSettings.load()
        row.model_cache_path = str(cache)
        row.allowed_output_roots = [str(root / "outputs")]
        row.allowed_dataset_roots = [str(root / "datasets")]
        row.save()
        owner = User.objects.create_user("trained-runs-owner")
        project = TrainingProject.objects.create(
            name=recipe.name,
            owner=owner,
            model_name=TINY_LLAMA,
            dataset_path=str(dataset),
            eval_dataset_path=str(eval_file or ""),
            output_directory=str(root / "outputs" / recipe.name),
            method=recipe.method,
            hyperparameters=recipe.hyperparameters,
        )
        worker = CeleryWorker(redis_url, root / "worker.log", WORKER_QUEUES, None)
        try:
            worker.wait_ready(120)
            started = start(project, owner)
            wait_for_end(started.pk, timeout=TAKEN_TIMEOUT, until=lambda run: run.status != RunStatus.QUEUED)
            run = wait_for_end(started.pk, timeout=TRAINING_TIMEOUT)
        except AssertionError as exc:
            raise RuntimeError(f"The session's {recipe.name} run: {exc}\nworker log:\n{worker.log_text()[-3000:]}")
        finally:
            worker.stop()
        if run.status != RunStatus.SUCCEEDED:
            raise RuntimeError(
                f"The session's {recipe.name} run {run.status}: {run.error_code} {run.error_message}\n"
                f"{run.log_tail[-3000:]}\nworker log:\n{worker.log_text()[-3000:]}"
            )
        return TrainedRun(recipe.name, str(root), _values(project, _NOT_COPIED), _values(run, {"id"}))
    finally:
        # The next test finds the database as a transactional test leaves it.
        call_command("flush", interactive=False, verbosity=0)


def _moved(value: Any, moves: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for old, new in moves:
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_moved(item, moves) for item in value]
    if isinstance(value, dict):
        return {key: _moved(item, moves) for key, item in value.items()}
    return value


def _lay_datasets(trained: TrainedRun, root: Path) -> None:
    """The session's dataset files at the same places under `root` (a file the test wrote there must be the same)."""
    source = Path(trained.root) / "datasets"
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        dest = root / path.relative_to(trained.root)
        if dest.exists():
            assert dest.read_bytes() == path.read_bytes(), f"{dest} differs from the session run's {path}"
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)


def _move_paths_in_files(folder: Path, moves: list[tuple[str, str]]) -> None:
    """The paths the trainer wrote in the copy's text files (its manifest, peft's adapter config and model card)
    moved as the rows' are, so the copy names the test's base model snapshot and its own folder."""
    for path in folder.rglob("*"):
        if path.suffix in TEXT_SUFFIXES and path.is_file() and not path.is_symlink():
            text = path.read_text()
            if (moved := _moved(text, moves)) != text:
                path.write_text(moved)


def copy_trained_run(
    trained: TrainedRun,
    owner,
    root: Path,
    *,
    project: TrainingProject | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> TrainingRun:
    """A succeeded run of `owner`'s in this test's database and under this test's portal root `root` (set up as
    tests/conftest.py's portal_roots does, with tiny_llama_in_cache), copied from the session's `trained` run.

    Its project is created from the session's (the same name, files and settings) unless `project` is given; the
    run's folder is created inside the project's output directory by the worker's own function, which records its
    identity on the row, and holds a copy of the session run's files. Every path under the session's root in the
    rows is moved under `root`, and the run's times are moved to end now. `hyperparameters` changes values in the
    run's copy of the settings (its config), as if the project had held them at Start."""
    root = Path(root)
    snapshot = _moved(trained.run["resolved_path"], [(trained.root, str(root))])
    assert Path(snapshot).is_dir(), f"the test's cache has no {TINY_LLAMA} at {snapshot}: use tiny_llama_in_cache"
    _lay_datasets(trained, root)
    if project is None:
        values = _rows_of(_moved(trained.project, [(trained.root, str(root))]), TrainingProject)
        project = TrainingProject.objects.create(owner=owner, **values)
    run = TrainingRun.objects.create(project=project, started_by=owner, status=RunStatus.QUEUED)
    run.run_folder = run_folder(project.output_directory, run.pk)
    moves = [
        (str(trained.folder), run.run_folder),
        (trained.project_output, project.output_directory),
        (trained.root, str(root)),
    ]
    values = _rows_of(_moved({k: v for k, v in trained.run.items() if k not in _NOT_COPIED_RUN}, moves), TrainingRun)
    shift = timezone.now() - values["finished_at"]
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = value + shift
    if hyperparameters:
        values["config"]["hyperparameters"].update(hyperparameters)
    for name, value in values.items():
        setattr(run, name, value)
    run.save()
    folder = create_run_folder(run)
    try:
        shutil.copytree(trained.folder, run.run_folder, symlinks=True, dirs_exist_ok=True)
    finally:
        os.close(folder)
    _move_paths_in_files(Path(run.run_folder), moves)
    run.refresh_from_db()
    assert (problem := run_folder_problem(run)) is None, (
        problem
    )  # read as the worker's own folder, as every reader does
    return run
