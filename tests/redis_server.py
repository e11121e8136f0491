"""A real Redis for the tests: the one REDIS_URL names, else 127.0.0.1:6379, else a private redis-server.

Each pytest session then claims a Redis database index of its own (1-15) so a worker from another run, or
another person's test session on the same server, can never take this session's tasks: Celery's queues and
its broadcast channels (`/{db}.` prefixed) are both per database. The claim is a key set with NX, so two
sessions starting at once cannot pick the same index; the database is flushed when the session ends, and
an index whose owner died without cleaning up (a killed run) is taken over.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

CLAIM_KEY = "mtm-tests:claimed-by"
CLAIM_SECONDS = 6 * 3600  # a crashed session's index becomes free again after this


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


class PrivateRedis:
    """`redis-server` on a free port with no persistence, stopped by `stop()`."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "These tests need Redis: none answers at REDIS_URL or 127.0.0.1:6379 and redis-server is not "
                "installed. Install it (apt-get install redis-server) or run `make test`, which does."
            )
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mtm-redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.dir)]
        with open(self.dir / "redis.log", "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(100):
            if answers(self.url) or self.process.poll() is not None:
                break
            time.sleep(0.1)
        if not answers(self.url):
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not answer: {self.log_text()}")

    def log_text(self) -> str:
        log = self.dir / "redis.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def find_server() -> tuple[str, PrivateRedis | None]:
    """A Redis URL that answers, and the private server to stop afterwards when one had to be started."""
    env_url = os.environ.get("REDIS_URL", "")
    if env_url and answers(env_url):
        return env_url, None
    if answers("redis://127.0.0.1:6379/0"):
        return "redis://127.0.0.1:6379/0", None
    server = PrivateRedis()
    return server.url, server


class DatabaseClaim:
    """One Redis database index held by this session (see the module docstring)."""

    def __init__(self, server_url: str) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        for db in random.sample(range(1, 16), 15):
            client = redis.Redis.from_url(with_db(server_url, db))
            if client.set(CLAIM_KEY, self.token, nx=True, ex=CLAIM_SECONDS) or self._take_over(client):
                self.url, self.client = with_db(server_url, db), client
                self.clear()  # keys left by a session that ended without cleaning up: nothing of ours
                return
            client.close()
        raise RuntimeError(
            f"All Redis databases 1-15 at {server_url} are claimed by other test sessions ({CLAIM_KEY}). "
            "Wait for them to finish, or point REDIS_URL at another server."
        )

    def clear(self) -> None:
        """Delete every key of the claimed database but the claim: queued tasks, results."""
        for key in self.client.scan_iter(count=500):
            if key != CLAIM_KEY.encode():
                self.client.delete(key)

    def _take_over(self, client: redis.Redis) -> bool:
        """Take a claim whose owner was a process on this machine that no longer exists (killed, so no teardown)."""
        holder = (client.get(CLAIM_KEY) or b"").decode(errors="replace")
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
            return False
        return bool(client.eval(_REPLACE_IF_UNCHANGED, 1, CLAIM_KEY, holder, self.token, CLAIM_SECONDS))

    def release(self) -> None:
        if self.client.get(CLAIM_KEY) == self.token.encode():
            self.client.flushdb()
        self.client.close()


# Compare-and-set, so two sessions that both find the same dead owner cannot both take its index.
_REPLACE_IF_UNCHANGED = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
