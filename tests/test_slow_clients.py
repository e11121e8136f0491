"""Slow clients cannot take the portal down: the gunicorn that docker-compose.yml runs, started here the same way,
still answers a member while more slow clients than it has worker processes trickle their request headers.

This is the gunicorn half of the protection (threads: one slow client holds one thread, not a whole process). The
other half, nginx buffering every request before it reaches gunicorn, is checked by reading in test_compose.py:
there is no nginx on this machine. No timing is asserted: the member's request is bounded by a socket timeout that
ends while the slow clients are still sending, and the answer is either there or not.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.redis_server import free_port
from tests.test_compose import BASE_DIR, command_words, option_value

# How long the member waits for an answer; the slow clients keep sending for longer than that.
MEMBER_TIMEOUT = 15.0
SLOW_HEADER_EVERY = 1.0
STARTUP_TIMEOUT = 120.0


def compose_gunicorn_words() -> list[str]:
    """The gunicorn command line of compose's web service, from `gunicorn` on."""
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    words = command_words(compose["services"]["web"])
    return words[words.index("gunicorn") :]


def slow_client_count(words: list[str]) -> int:
    """One more slow client than compose starts worker processes, so one request per process leaves none free."""
    return int(option_value(words, "--workers", "-w") or 1) + 1


def without_protection(words: list[str]) -> list[str]:
    """The same command with gunicorn's default worker: one request at a time per process."""
    words = [w for w in words if not w.startswith(("--worker-class=", "--threads="))]
    for option in ("--worker-class", "-k", "--threads"):
        while option in words:
            i = words.index(option)
            del words[i : i + 2]
    return [*words, "--worker-class", "sync"]


def bound_to(words: list[str], port: int) -> list[str]:
    words = list(words)
    bind = option_value(words, "--bind", "-b")
    assert bind is not None, "compose's gunicorn names no --bind"
    words[words.index(bind)] = f"127.0.0.1:{port}"
    return words


def request(port: int, timeout: float) -> bytes:
    """A member's GET /projects/: the status line of the answer, or b'' when none came within the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            b"GET /projects/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
        )
        try:
            return sock.recv(4096).split(b"\r\n", 1)[0]
        except TimeoutError:
            return b""


@pytest.fixture
def start_gunicorn(tmp_path: Path) -> Iterator:
    started: list[subprocess.Popen] = []

    def start(words: list[str]) -> int:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
        env.update(
            DEBUG="0",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="127.0.0.1",
            MTM_VAR_DIR=str(tmp_path / "var"),
        )
        args = [sys.executable, "-m", "gunicorn", *bound_to(words, port)[1:]]
        log = (tmp_path / "gunicorn.log").open("wb")
        process = subprocess.Popen(args, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                if request(port, timeout=STARTUP_TIMEOUT).startswith(b"HTTP/1.1 "):
                    return port
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"gunicorn did not answer: {(tmp_path / 'gunicorn.log').read_text()}")

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=60)


class SlowClients:
    """Connections that each send a request line and then one header line every SLOW_HEADER_EVERY seconds, never
    ending the headers, until stopped."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)

    def _trickle(self) -> None:
        for sock in self.sockets:
            sock.sendall(b"GET /projects/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        line = 0
        while not self.stop.wait(SLOW_HEADER_EVERY):
            line += 1
            for sock in self.sockets:
                with contextlib.suppress(OSError):  # the server may close a slow client: that is its right
                    sock.sendall(f"X-Slow-{line}: 1\r\n".encode())

    def __enter__(self) -> SlowClients:
        self.thread.start()
        time.sleep(3 * SLOW_HEADER_EVERY)  # every slow client has been handed to a worker by now
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


@pytest.mark.slow
def test_a_member_is_answered_while_slow_clients_trickle_headers(start_gunicorn):
    words = compose_gunicorn_words()
    port = start_gunicorn(words)
    with SlowClients(port, slow_client_count(words)):
        status = request(port, timeout=MEMBER_TIMEOUT)
    assert status.startswith(b"HTTP/1.1 3"), f"a member behind {slow_client_count(words)} slow clients got {status!r}"
    # Fewer slow clients than one process has threads: wherever the kernel hands them (and the member's request),
    # that process still has a thread free, so the answer above is not luck.
    assert slow_client_count(words) < int(option_value(words, "--threads") or 1)


@pytest.mark.slow
def test_without_threads_the_same_slow_clients_starve_the_member(start_gunicorn):
    """The attack above is real: gunicorn's default sync workers, compose's command before, answer nobody."""
    words = compose_gunicorn_words()
    port = start_gunicorn(without_protection(words))
    with SlowClients(port, slow_client_count(words)):
        status = request(port, timeout=MEMBER_TIMEOUT)
    assert status == b""
