"""`python -m projects.trainer SPEC.json`: the trainer child process.

No Django in here: it starts fast and a crash cannot touch the database. Events go to stdout as
`MTM_EVENT {json}` lines (projects.trainer.events); everything else printed is log output.
Exit codes: 0 finished, 1 error (an "error" event is printed first), 2 usage, 3 cancelled.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # before the heavy imports, so "imports" can be measured

import errno  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from projects.trainer.errors import TrainerError  # noqa: E402
from projects.trainer.events import EXIT_ERROR, EXIT_USAGE, format_event  # noqa: E402
from projects.trainer.outputs import resolve_resume  # noqa: E402
from projects.trainer.ranks import leave, speaks, tag_error, tie_to_launcher  # noqa: E402
from projects.trainer.spec import read_spec  # noqa: E402

# Progress bars would flood the supervisor's log tail; the events carry the progress.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

USAGE = "usage: python -m projects.trainer SPEC.json"


def emit(kind: str, **fields: object) -> None:
    if not speaks(kind):  # a run on several devices: rank 0 reports, the others only their own errors
        return
    if kind == "error":
        fields = tag_error(fields)
    sys.stdout.write(format_event(kind, STARTED, **fields) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    spec = None
    tie_to_launcher()
    try:
        spec = read_spec(Path(args[0]))
        resume = resolve_resume(spec.resume_from_checkpoint, spec.write_dir)  # fail before the slow imports
        if spec.hyperparameters.objective == "dpo":
            from projects.trainer.dpo import run_dpo_training as run_training  # torch, transformers, trl
        else:
            from projects.trainer.run import run_training  # torch and transformers: seconds to import

        code = run_training(spec, emit, imports_seconds=time.monotonic() - STARTED, resume=resume)
        leave()
        return code
    except TrainerError as exc:
        _report(exc.code, exc.message, exc.hint)
    except BaseException as exc:  # the child must always say why it died before exiting
        in_output_dir = spec is not None and spec.write_dir == Path(".")  # started inside the folder it writes
        code, message, hint = _describe(exc, spec.output_dir if in_output_dir else None)
        _report(code, message, hint)
    return EXIT_ERROR


def _output_dir_gone(wait_seconds: float = 3.0) -> bool:
    """The trainer works inside the output folder it was started in: was that folder (or its run marker) deleted
    under it? A deletion in progress (rm -r) may not have reached the folder itself yet, so look for a moment."""
    from projects.trainer.outputs import RUN_MARKER

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            if os.stat(".").st_nlink == 0 or not os.path.exists(RUN_MARKER):
                return True
        except OSError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _describe(exc: BaseException, output_dir: Path | None = None) -> tuple[str, str, str]:
    # A deleted folder surfaces as FileNotFoundError from Python but as RuntimeError from torch.save
    # ("Parent directory ./checkpoint-18 does not exist."), so ask the folder rather than the exception.
    if output_dir is not None and isinstance(exc, (OSError, RuntimeError)) and _output_dir_gone():
        return (
            "output_directory_vanished",
            f"The output directory {output_dir} disappeared during training (deleted or unmounted): {exc}",
            "Restore or recreate the directory (and its checkpoints, if you have them), then start the run again.",
        )
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        return (
            "out_of_memory",
            f"Training ran out of GPU memory: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            "Lower batch_size (raise gradient_accumulation_steps to keep the effective batch), lower "
            "max_seq_length, turn on gradient_checkpointing, or train with LoRA.",
        )
    if _is_disk_full(exc):
        return (
            "disk_full",
            f"The output disk is full: {exc}",
            "Free space on the output directory's disk (df -h shows it) or move the output directory to a larger "
            "disk, then resume from the latest checkpoint.",
        )
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "Training was interrupted (SIGINT).", "Start the run again; resume from 'latest'."
    return (
        "training_crashed",
        f"Training crashed: {type(exc).__name__}: {exc}",
        "The log tail and the traceback show where; fix the cause and start a new run (it can resume from "
        "the latest checkpoint).",
    )


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC anywhere in the chain; torch and safetensors wrap it in RuntimeErrors with the OS message."""
    while exc is not None:
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _report(code: str, message: str, hint: str) -> None:
    trace = traceback.format_exc()
    print(trace, file=sys.stderr)
    emit("error", code=code, message=message, hint=hint, traceback=trace)


if __name__ == "__main__":
    sys.exit(main())
