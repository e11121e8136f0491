"""Memory of the web process while a large dataset is uploaded and checked through the project form. Not a test:
prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.upload_rss [--size-mb 1024] [--json]

In one run: a throwaway portal (bench/load_portal.py: temp var/, SQLite database and upload folder; a staff user
with a password) served by one gunicorn sync worker on 127.0.0.1 with production settings (DEBUG=0; requests say
X-Forwarded-Proto: https as a TLS proxy would). The script signs in through the login form, warms the worker up
with the form page and a small upload, then reads the worker's resident memory (idle) and:
  1. upload: streams a generated SIZE_MB JSON Lines file to the form's upload endpoint (POST
     /projects/upload-dataset/, as the file box sends it) and waits for its answer, the dataset check included;
  2. check: the as-you-type check of the stored path (GET /projects/check-dataset/), as the path box sends it.
The worker's resident memory is read from /proc/PID/status every 10 ms during each (and its peak, VmHWM, reset
before each through /proc/PID/clear_refs where the kernel allows); the figures are the peaks over idle and the
answer times. Exit status 1 when an answer is not the expected one. Nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also runnable as `python bench/upload_rss.py`

from bench import load_portal  # noqa: E402
from bench.load import Client  # noqa: E402

CSRF_FIELD = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')
STORED_PATH = re.compile(rb'name="dataset_path" value="([^"]+)"')
ROWS_SHOWN = re.compile(rb'<strong class="rows">([^<]+)</strong>')
BOUNDARY = "mtm-upload-rss-boundary"
MIB = 1024 * 1024


def write_dataset(path: Path, size_mb: int) -> int:
    """A JSON Lines file of prompt/completion rows, about `size_mb` MiB. Returns its size in bytes."""
    target = size_mb * MIB
    written = 0
    block_number = 0
    with path.open("wb") as out:
        while written < target:
            rows = (
                json.dumps({"prompt": f"Question {block_number}-{i}: " + "why " * 40, "completion": " because" * 40})
                for i in range(2000)
            )
            block = ("\n".join(rows) + "\n").encode()
            out.write(block)
            written += len(block)
            block_number += 1
    return written


def kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(field + ":")), None)
    except OSError:
        return None


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakSampler:
    """The highest VmRSS of a process seen every 10 ms while the block runs, and its VmHWM at the end."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_kib: int | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, kib(self.pid, "VmRSS") or 0)
            self._stop.wait(0.01)

    def __enter__(self) -> PeakSampler:
        self.hwm_reset = reset_peak(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            self.hwm_kib = kib(self.pid, "VmHWM")

    @property
    def peak(self) -> int:
        return max(self.peak_kib, self.hwm_kib or 0)


def worker_pid(master: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        except OSError:
            children = []
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise SystemExit("gunicorn started no worker")


def multipart(csrf: str, name: str, size: int) -> tuple[bytes, bytes, int]:
    """The bytes before and after the file in a multipart body, and the body's total length."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{csrf}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="dataset_path"\r\n\r\n\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="dataset_file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail, len(head) + size + len(tail)


def upload(client: Client, csrf: str, path: Path) -> tuple[int, bytes]:
    """POST the file to the form's upload endpoint, streamed from disk as a browser sends it."""
    head, tail, length = multipart(csrf, path.name, path.stat().st_size)
    portal = client.portal
    conn = client.conn
    conn.putrequest("POST", "/projects/upload-dataset/")
    headers = {
        "X-Forwarded-Proto": "https",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(length),
        "HX-Request": "true",
        "X-CSRFToken": csrf,
        "Origin": portal.origin,
        "Referer": f"{portal.origin}/projects/new/",
        **client.cookie_header(),
    }
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(head)
    with path.open("rb") as fh:
        while chunk := fh.read(MIB):
            conn.send(chunk)
    conn.send(tail)
    response = conn.getresponse()
    return response.status, response.read()


@dataclass
class Step:
    label: str
    seconds: float
    peak_over_idle_mb: float
    answer: str


def measure(label: str, pid: int, idle_kib: int, call) -> tuple[Step, int, bytes]:
    with PeakSampler(pid) as sampler:
        started = time.monotonic()
        status, body = call()
        seconds = time.monotonic() - started
    shown = ROWS_SHOWN.search(body)
    answer = f"HTTP {status}: " + (shown.group(1).decode() if shown else "no row count shown")
    return Step(label, round(seconds, 2), round((sampler.peak - idle_kib) / 1024, 1), answer), status, body


def run(tmp: Path, size_mb: int) -> dict:
    env = load_portal.portal_env(tmp, "")
    (tmp / "tmp").mkdir()
    env["TMPDIR"] = str(tmp / "tmp")  # Django keeps an upload there while it arrives
    token, password = load_portal.staff_user(env)
    portal = load_portal.serve(tmp, env, 1, token, password, "SQLite (temporary file)", [], ("--timeout", "900"))
    try:
        client = Client(portal)
        client.sign_in()
        status, page = client.send("GET", "/projects/new/", None, client.cookie_header())
        match = CSRF_FIELD.search(page)
        if status != 200 or match is None:
            raise SystemExit(f"the project form answered HTTP {status}")
        csrf = match.group(1).decode()
        small = tmp / "small.jsonl"
        write_dataset(small, 1)
        upload(client, csrf, small)  # warm-up: the upload and check code imported, the worker's arenas in use
        pid = worker_pid(portal.server.pid)
        time.sleep(1)
        idle = kib(pid, "VmRSS") or 0
        dataset = tmp / "dataset.jsonl"
        size = write_dataset(dataset, size_mb)
        step_upload, status, body = measure("upload", pid, idle, lambda: upload(client, csrf, dataset))
        dataset.unlink()
        stored = STORED_PATH.search(body)
        problems = []
        if status != 200 or stored is None or b"at least" not in body:
            problems.append(f"upload: {step_upload.answer}")
        query = urlencode({"dataset_path": stored.group(1).decode() if stored else ""})
        step_check, status, body = measure(
            "check",
            pid,
            idle,
            lambda: client.send(
                "GET", f"/projects/check-dataset/?{query}", None, {"HX-Request": "true", **client.cookie_header()}
            ),
        )
        if status != 200 or b"at least" not in body:
            problems.append(f"check: {step_check.answer}")
    finally:
        load_portal.stop(portal)
    return {
        "dataset_bytes": size,
        "idle_rss_mb": round(idle / 1024, 1),
        "steps": {s.label: s.__dict__ for s in (step_upload, step_check)},
        "peak_over_idle_mb": max(step_upload.peak_over_idle_mb, step_check.peak_over_idle_mb),
        "problems": problems,
    }


def print_report(result: dict) -> None:
    print(f"dataset: {result['dataset_bytes'] / MIB:.0f} MiB of JSON Lines; idle worker RSS {result['idle_rss_mb']} MB")
    for step in result["steps"].values():
        print(
            f"  {step['label']:<7} {step['seconds']:>7.2f} s   peak RSS +{step['peak_over_idle_mb']:.1f} MB over idle"
            f"   {step['answer']}"
        )
    for problem in result["problems"]:
        print(f"  UNEXPECTED {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the generated JSON Lines file")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last")
    args = parser.parse_args(argv)
    if args.size_mb < 2:
        parser.error("--size-mb must be at least 2 (the warm-up upload is 1 MiB)")
    with tempfile.TemporaryDirectory(prefix="mtm-upload-rss-") as tmp:
        print(f"preparing a throwaway portal in {tmp} ...", flush=True)
        result = run(Path(tmp), args.size_mb)
    print_report(result)
    if args.json:
        print(json.dumps(result))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    load_portal.run_as_script(main)
