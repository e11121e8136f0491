"""Load script (many people at once). Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.load [--clients 20] [--duration 30] [--workers 2] [--repos 200] [--json]

In one run: a throwaway portal (bench/load_portal.py: temp var/ and SQLite database, or DATABASE_URL when set;
an HF cache with the demo model and REPOS small repos; a staff user with a password and an API token) served
by gunicorn with WORKERS sync workers on 127.0.0.1, production settings (DEBUG=0; the clients send
X-Forwarded-Proto: https as a TLS proxy would). Each of CLIENTS threads signs in once through the login form
(CSRF included, right password, so the sign-in throttle never trips), then:
  1. mix, DURATION seconds: validate-model (present, missing, invalid name), models/available, the /models/
     page and a model's page, in turn, with a bearer token for the API and the session for the pages;
  2. baseline, DURATION seconds: GET /api/v1/settings with the bearer token (a trivial authenticated endpoint).
Every response is checked (status and a glance at the body); anything unexpected, and any exception, is an
error. Exit status 1 when there were errors. Traffic goes to 127.0.0.1 only; nothing is left behind.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also runnable as `python bench/load.py`

from bench import load_portal  # noqa: E402
from bench.load_portal import Portal  # noqa: E402

BASELINE_LABEL = "GET /api/v1/settings"
CSRF_FIELD = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')
Check = Callable[[int, bytes], str | None]


@dataclass(frozen=True)
class Action:
    label: str
    method: str
    path: str
    body: dict | None
    check: Check  # None when the answer is right, else what is wrong with it
    session: bool = False  # the pages use the signed-in session; the API the bearer token


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    requests: int = 0

    def add(self, label: str, seconds: float, problem: str | None) -> None:
        self.requests += 1
        self.latencies.setdefault(label, []).append(seconds)
        if problem:
            self.errors[f"{label}: {problem}"] += 1

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.errors.update(other.errors)
        for label, samples in other.latencies.items():
            self.latencies.setdefault(label, []).extend(samples)


def expect_json(want: int, test: Callable[[dict], bool]) -> Check:
    def check(got: int, body: bytes) -> str | None:
        if got != want:
            return f"HTTP {got} (expected {want}): {body[:160]!r}"
        try:
            ok = test(json.loads(body))
        except (ValueError, TypeError, KeyError, IndexError):
            ok = False
        return None if ok else f"unexpected body {body[:160]!r}"

    return check


def expect_page(marker: str) -> Check:
    def check(got: int, body: bytes) -> str | None:
        if got != 200:
            return f"HTTP {got} (expected 200)"
        return None if marker.encode() in body else f"page without {marker!r}"

    return check


def mix_actions(portal: Portal, repos: int) -> list[Action]:
    present, listed = portal.model_names[0], portal.model_names[-1]
    validate = "/api/v1/projects/validate-model"
    return [
        Action(
            "POST validate-model (present)",
            "POST",
            validate,
            {"model_name": present},
            expect_json(200, lambda d: d["valid"] is True and d["source"] == "cache"),
        ),
        Action(
            "POST validate-model (missing)",
            "POST",
            validate,
            {"model_name": "load-test/not-downloaded"},
            expect_json(200, lambda d: d["valid"] is False and d["errors"][0]["code"] == "model_not_found"),
        ),
        Action(
            "POST validate-model (invalid name)",
            "POST",
            validate,
            {"model_name": "../../etc/passwd"},
            expect_json(422, lambda d: d["errors"][0]["code"] == "invalid_model_name"),
        ),
        Action(
            "GET models/available",
            "GET",
            "/api/v1/projects/models/available",
            None,
            expect_json(200, lambda d: d["count"] == repos + 1),
        ),
        Action("GET /models/ (page)", "GET", "/models/", None, expect_page(present), session=True),
        Action(
            "GET /models/<name>/ (page)",
            "GET",
            f"/models/{quote(listed)}/",
            None,
            expect_page(listed),
            session=True,
        ),
    ]


def baseline_actions() -> list[Action]:
    return [
        Action(
            BASELINE_LABEL,
            "GET",
            "/api/v1/settings",
            None,
            expect_json(200, lambda d: "effective_cache_dir" in d),
        )
    ]


class Client:
    """One person: one HTTP connection (reopened when gunicorn closes it), a cookie jar, a bearer token."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.conn = http.client.HTTPConnection(portal.host, portal.port, timeout=120)
        self.cookies: dict[str, str] = {}

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        headers = {"X-Forwarded-Proto": "https", **headers}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except Exception:
            self.conn.close()
            raise
        for cookie in response.msg.get_all("Set-Cookie") or []:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        return response.status, data

    def cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def sign_in(self) -> None:
        """The login form as a browser posts it: CSRF cookie and field, Origin, the right password."""
        status, page = self.send("GET", "/accounts/login/", None, {})
        match = CSRF_FIELD.search(page)
        if status != 200 or match is None:
            raise RuntimeError(f"login page: HTTP {status}, CSRF field {'found' if match else 'missing'}")
        form = {
            "username": self.portal.username,
            "password": self.portal.password,
            "csrfmiddlewaretoken": match.group(1).decode(),
        }
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": self.portal.origin,
            "Referer": f"{self.portal.origin}/accounts/login/",
            **self.cookie_header(),
        }
        status, page = self.send("POST", "/accounts/login/", urlencode(form).encode(), headers)
        if status != 302 or "sessionid" not in self.cookies:
            raise RuntimeError(f"sign-in refused: HTTP {status}: {page[:300]!r}")

    def perform(self, action: Action) -> tuple[float, str | None]:
        headers = self.cookie_header() if action.session else {"Authorization": f"Bearer {self.portal.token}"}
        body = None
        if action.body is not None:
            body = json.dumps(action.body).encode()
            headers["Content-Type"] = "application/json"
        start = time.perf_counter()
        try:
            status, data = self.send(action.method, action.path, body, headers)
        except Exception as exc:
            return time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - start, action.check(status, data)


def run_phase(
    clients: list[Client], actions: list[Action], seconds: float, stop: threading.Event, cycles: int | None = None
) -> tuple[Tally, float]:
    """Every client cycles through `actions`, each from its own offset, until the deadline (or for `cycles`
    rounds when given). Returns the tally and the seconds it took."""
    tallies = [Tally() for _ in clients]
    barrier = threading.Barrier(len(clients) + 1)
    deadline = [0.0]

    def loop(index: int) -> None:
        client, tally = clients[index], tallies[index]
        barrier.wait()
        step = index
        last = index + cycles * len(actions) if cycles is not None else None
        while not stop.is_set() and (step < last if last is not None else time.perf_counter() < deadline[0]):
            action = actions[step % len(actions)]
            elapsed, problem = client.perform(action)
            tally.add(action.label, elapsed, problem)
            step += 1

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total, elapsed


def sign_in_all(clients: list[Client]) -> None:
    failures: list[str] = []

    def one(client: Client) -> None:
        try:
            client.sign_in()
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} of {len(clients)} clients could not sign in; first: {failures[0]}")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarise(phases: dict[str, tuple[Tally, float]], warmup: Tally, args: argparse.Namespace, portal: Portal) -> dict:
    mix, mix_s = phases["mix"]
    base, base_s = phases["baseline"]
    errors = warmup.errors + mix.errors + base.errors
    endpoints = {}
    for tally in (mix, base):
        for label, samples in tally.latencies.items():
            endpoints[label] = {
                "requests": len(samples),
                "errors": sum(n for key, n in tally.errors.items() if key.startswith(f"{label}: ")),
                "p50_ms": round(percentile(samples, 0.50) * 1000, 1),
                "p95_ms": round(percentile(samples, 0.95) * 1000, 1),
                "p99_ms": round(percentile(samples, 0.99) * 1000, 1),
            }
    mix_rate, base_rate = mix.requests / mix_s, base.requests / base_s
    return {
        "clients": args.clients,
        "duration_s": args.duration,
        "gunicorn_workers": args.workers,
        "cache_repos": args.repos + 1,
        "database": portal.database,
        "cpus": os.cpu_count(),
        "baseline_endpoint": f"{BASELINE_LABEL} (bearer token)",
        "requests": {"warmup": warmup.requests, "mix": mix.requests, "baseline": base.requests},
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(10)),
        "throughput_rps": {"mix": round(mix_rate, 1), "baseline": round(base_rate, 1)},
        "ratio_mix_to_baseline": round(mix_rate / base_rate, 3) if base_rate else None,
        "endpoints": endpoints,
    }


def print_report(result: dict) -> None:
    rps, req = result["throughput_rps"], result["requests"]
    print(
        f"\n{result['clients']} clients x {result['duration_s']} s per phase, gunicorn {result['gunicorn_workers']} "
        f"sync workers, {result['database']}, {result['cache_repos']} repos in the cache, {result['cpus']} CPUs"
    )
    print(f"mix:      {req['mix']:>7} requests, {rps['mix']:>8.1f} req/s")
    print(f"baseline: {req['baseline']:>7} requests, {rps['baseline']:>8.1f} req/s  ({result['baseline_endpoint']})")
    print(f"throughput mix / baseline: {result['ratio_mix_to_baseline']}")
    print(f"\n{'endpoint':<36} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for label, row in result["endpoints"].items():
        print(
            f"{label:<36} {row['requests']:>8} {row['errors']:>6} "
            f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f}"
        )
    print(f"\nerrors: {result['errors']} (goal 0; {req['warmup']} warm-up requests included)")
    for kind, count in result["error_kinds"].items():
        print(f"  {count} x {kind}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase (mix, then baseline)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--repos", type=int, default=200, help="small repos in the cache beside the demo model")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""), help="default: temp SQLite")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.workers < 1 or args.repos < 1:
        parser.error("--clients, --duration, --workers and --repos must be positive")

    # SIGTERM unwinds like Ctrl-C, so the finally below stops gunicorn and the temp folder goes.
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="mtm-load-") as tmp:
        print(f"preparing a throwaway portal in {tmp} ...", flush=True)
        portal = load_portal.start(Path(tmp), args.workers, args.repos, args.database_url)
        try:
            print(f"gunicorn answers on {portal.host}:{portal.port}; signing in {args.clients} clients", flush=True)
            clients = [Client(portal) for _ in range(args.clients)]
            sign_in_all(clients)
            mix = mix_actions(portal, args.repos)
            # One round of the mix, not timed: both gunicorn workers load the listing and import what the pages need.
            warmup, _ = run_phase(clients, mix, 0.0, stop, cycles=1)
            phases = {}
            for name, actions in (("mix", mix), ("baseline", baseline_actions())):
                print(f"{name}: {args.clients} clients for {args.duration:g} s ...", flush=True)
                phases[name] = run_phase(clients, actions, args.duration, stop)
        finally:
            stop.set()
            load_portal.stop(portal)
    result = summarise(phases, warmup, args, portal)
    print_report(result)
    if args.json:
        print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    load_portal.run_as_script(main)
