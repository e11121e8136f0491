"""A LoRA run's adapter as a .tar.gz, streamed: the regular files at the top of the run's folder (the adapter, its
tokenizer files and the manifest), never its checkpoints, merged model or anything reached through a link.

The folder is opened without following links, and each file by name inside it with O_NOFOLLOW: a link planted in
the folder (to a file or a folder elsewhere) is left out, as is a file with more than one hard link (another name
for a file outside the folder). Files are read and compressed a block at a time, so memory stays small whatever
the adapter's size.

The archive is bounded: a FIFO, socket or device at the top of the folder, a sparse file (one with a hole anywhere:
bytes never written, which the trainer never leaves) and a file larger than the run could have written (file_limit:
four times the base model's weights plus room for tokenizer files, never above MTM_ADAPTER_ARCHIVE_MAX_BYTES) are
refused, naming the file, before a byte is sent; all files together may not pass MTM_ADAPTER_ARCHIVE_MAX_BYTES, and
a file that changes after that check is never streamed past what was checked (the download is cut instead).
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.http import StreamingHttpResponse

from mtm.shared.nofollow import FILE_FLAGS
from mtm.shared.problems import Problem
from projects.models import RunStatus, TrainingRun
from projects.runs.folder import RUN_FOLDER_CHANGED, RunFolderRefused, open_run_folder

ADAPTER_CONFIG = ("adapter_config.json",)
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # an archive without them loads nothing
_BLOCK = 1 << 16
_TOKENIZER_ROOM = 64 * 1024**2  # tokenizer files and the manifest, whatever the model's size
_SPARSE_FROM = 1024**2  # files smaller than this are not judged sparse (a small file may have no block yet)
_WEIGHTS = (".safetensors", ".bin")


class AdapterUnavailable(Exception):
    """`status`: 404 when the run has no adapter (not LoRA, not succeeded, files gone)."""

    def __init__(self, problem: Problem, status: int = 404):
        super().__init__(problem.message)
        self.problem = problem
        self.status = status


@dataclass(frozen=True)
class AdapterArchive:
    filename: str
    chunks: Iterator[bytes]

    def response(self) -> StreamingHttpResponse:
        """The archive as a download, streamed as it is made."""
        response = StreamingHttpResponse(self.chunks, content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="{self.filename}"'
        return response


def archive_name(run: TrainingRun) -> str:
    return f"run-{run.pk}-adapter"


def _unavailable(run: TrainingRun, why: str) -> AdapterUnavailable:
    return AdapterUnavailable(
        Problem(
            "adapter_unavailable",
            f"Run {run.pk} has no LoRA adapter to download: {why}.",
            "A LoRA run that succeeded, with its files on disk, has one; a full fine-tune is the whole model.",
        )
    )


def _members(folder_fd: int) -> list[str]:
    """The names of the regular, singly linked files at the top of the folder (no links, folders, or dotfiles).
    AdapterFileRefused for a FIFO, socket or device: nothing the trainer writes."""
    names = []
    for name in sorted(os.listdir(folder_fd)):
        if name.startswith("."):
            continue
        try:
            info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            names.append(name)
        elif not (stat.S_ISLNK(info.st_mode) or stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            raise AdapterFileRefused(name, "is not a regular file (a FIFO, socket or device)")
    return names


class AdapterFileRefused(Exception):
    def __init__(self, name: str, why: str):
        super().__init__(f"{name} {why}")
        self.name = name
        self.why = why


def file_limit(run: TrainingRun) -> int:
    """The largest file the archive sends for `run`: four times its base model's weights (an adapter of any rank,
    saved in fp32 from a 16-bit base, stays below that) plus room for tokenizer files, and never more than
    MTM_ADAPTER_ARCHIVE_MAX_BYTES; only that setting when the base model's folder cannot be measured."""
    cap = settings.MTM_ADAPTER_ARCHIVE_MAX_BYTES
    weights = _weights_bytes(run.resolved_path)
    return cap if weights is None else min(cap, 4 * weights + _TOKENIZER_ROOM)


def _weights_bytes(folder: str) -> int | None:
    if not folder:
        return None
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(_WEIGHTS):
                    total += entry.stat().st_size  # a cache's weights are links to its blobs
    except OSError:
        return None
    return total or None


def _check_sizes(folder_fd: int, names: list[str], limit: int, total_limit: int) -> dict[str, int]:
    """Each member's size, checked: no holes, not over `limit`, all together not over `total_limit`."""
    sizes: dict[str, int] = {}
    for name in names:
        info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if info.st_size > limit:
            raise AdapterFileRefused(
                name, f"is {info.st_size} bytes, larger than this run could have written ({limit} bytes at most)"
            )
        if (hole := _first_hole(folder_fd, name, info.st_size)) is not None:
            raise AdapterFileRefused(
                name,
                f"is a sparse file ({info.st_size} bytes long, with a hole at byte {hole}: "
                f"{info.st_blocks * 512} bytes on disk), not one the trainer writes",
            )
        sizes[name] = info.st_size
    if sum(sizes.values()) > total_limit:
        raise AdapterFileRefused(
            max(sizes, key=sizes.__getitem__),
            f"makes the adapter's files {sum(sizes.values())} bytes together, over the download limit of "
            f"{total_limit} bytes (MTM_ADAPTER_ARCHIVE_MAX_BYTES)",
        )
    return sizes


def _first_hole(folder_fd: int, name: str, size: int) -> int | None:
    """Where the file's first hole (a range never written, read back as zeros) starts, or None when it has none.
    The trainer writes every byte of its files, so any hole is a file made by hand. Asked of the file system
    (SEEK_HOLE, which answers the end of the file when there is no hole); where it cannot say, a file of at least
    _SPARSE_FROM bytes with fewer bytes on disk than its length counts as one with a hole at its start."""
    if size == 0:
        return None
    fd = os.open(name, FILE_FLAGS, dir_fd=folder_fd)
    try:
        try:
            hole = os.lseek(fd, 0, os.SEEK_HOLE)
        except OSError:
            info = os.fstat(fd)
            return 0 if size >= _SPARSE_FROM and info.st_blocks * 512 < size else None
    finally:
        os.close(fd)
    return hole if hole < size else None


def _why_left_out(folder_fd: int, wanted: tuple[str, ...], folder: str) -> str:
    """Why none of `wanted` can go into the archive: absent, or present but a link (or one of several hard links),
    which the archive never follows."""
    for name in wanted:
        try:
            os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except OSError:
            continue
        return (
            f"{name} in {folder} is a link or has other hard links, which the archive leaves out; replace it "
            "with a plain copy of the file (e.g. cp --remove-destination) to download the adapter"
        )
    return f"there is no {' or '.join(wanted)} in {folder}"


def adapter_archive(run: TrainingRun) -> AdapterArchive:
    """The archive of a succeeded LoRA run's adapter; AdapterUnavailable (checked before any byte is sent)."""
    if run.status != RunStatus.SUCCEEDED:
        # Its files may be on disk, but only a run that passed validation hands them out.
        raise AdapterUnavailable(
            Problem(
                "adapter_unavailable",
                f"Run {run.pk} is {run.status}: only a run that succeeded, its adapter validated, offers it for "
                "download.",
                "Open the run page to see why it did not succeed, fix that and start a new run (or resume it).",
            )
        )
    if not run.run_folder:
        raise _unavailable(run, "it never wrote a folder")
    try:
        folder_fd = open_run_folder(run)  # the folder the worker made, never one swapped in since
    except RunFolderRefused as refused:
        if refused.problem.code != RUN_FOLDER_CHANGED:
            raise _unavailable(run, f"its folder {run.run_folder} is not on disk") from None
        raise AdapterUnavailable(refused.problem, status=409) from None
    try:
        names = _members(folder_fd)
        sizes = _check_sizes(folder_fd, names, file_limit(run), settings.MTM_ADAPTER_ARCHIVE_MAX_BYTES)
    except OSError:
        os.close(folder_fd)
        raise _unavailable(run, f"its folder {run.run_folder} cannot be read") from None
    except AdapterFileRefused as refused:
        os.close(folder_fd)
        raise AdapterUnavailable(
            Problem(
                "adapter_file_refused",
                f"Run {run.pk}'s adapter was not sent: {os.path.join(run.run_folder, refused.name)} {refused.why}.",
                "Remove that file from the run's folder (the trainer never writes such a file), or ask staff to "
                "raise MTM_ADAPTER_ARCHIVE_MAX_BYTES if the adapter is really that large.",
            ),
            status=422,
        ) from None
    for wanted in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not any(name in names for name in wanted):
            why = _why_left_out(folder_fd, wanted, run.run_folder)
            os.close(folder_fd)
            raise _unavailable(run, why)
    prefix = archive_name(run)
    return AdapterArchive(f"{prefix}.tar.gz", _stream(folder_fd, sizes, prefix))


class _Sink:
    """Where the gzip stream writes; drained after each block."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class ArchiveCut(Exception):
    """A file changed after its size was checked: the download stops rather than send more than was checked."""


def _stream(folder_fd: int, sizes: dict[str, int], prefix: str) -> Iterator[bytes]:
    sink = _Sink()
    try:
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as out:
            folder = tarfile.TarInfo(prefix)
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            out.write(folder.tobuf(format=tarfile.PAX_FORMAT))
            for name, size in sizes.items():
                yield from _add_file(out, sink, folder_fd, name, prefix, size)
            out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        yield sink.drain()
    finally:
        os.close(folder_fd)


def _add_file(out: gzip.GzipFile, sink: _Sink, folder_fd: int, name: str, prefix: str, checked: int) -> Iterator[bytes]:
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=folder_fd)
    except OSError:  # swapped for a link (or removed) since it was listed: left out
        return
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return
        if info.st_size > checked:
            raise ArchiveCut(f"{name} grew from {checked} to {info.st_size} bytes while the adapter was sent")
        member = tarfile.TarInfo(f"{prefix}/{name}")
        member.size, member.mode, member.mtime = info.st_size, 0o644, int(info.st_mtime)
        out.write(member.tobuf(format=tarfile.PAX_FORMAT))
        left = info.st_size
        while left > 0:
            block = handle.read(min(_BLOCK, left))
            if not block:  # the file shrank while it was read: pad, so the archive stays well formed
                block = tarfile.NUL * min(_BLOCK, left)
            out.write(block)
            left -= len(block)
            if sink.parts:
                yield sink.drain()
        if remainder := info.st_size % tarfile.BLOCKSIZE:
            out.write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))
