"""Memory of the web process for an as-you-type dataset check, and other members' pages while one member floods
the checks. Not a test: prints figures for BENCHMARKS.md.

    .venv/bin/python -m bench.web_memory [--size-mb 8] [--json]

In one run, on a throwaway portal (bench/load_portal.py: temp var/, SQLite, the demo model in a temp HF cache, a
generated SIZE_MB JSON Lines dataset of prompt/completion rows in the dataset root):

1. memory: three fresh Python processes, each with Django set up on that portal and warmed up (URLconf, templates
   and the check's modules imported by one check of a 1-row file without a model, and the model resolved once as
   the form's model box does before a dataset is typed); each reads its own resident memory as its baseline, then runs once, sampling VmRSS every 5 ms (and VmHWM, reset first where the kernel
   allows):
   - before: what the check request did until now: resolve the model, load its tokenizer, read the first 8 MiB
     (2,000 rows) and tokenize them (load_tokenizer + inspect_dataset);
   - after: GET /projects/check-dataset/ with the model through Django's test client, as the path box sends it
     (the bounded read; the counts are queued for a worker);
   - worker: the queued count itself (projects.datasets.token_counting.count_tokens), where the cost went;
   - save: POST /projects/new/ (the form's save) with that dataset and model and a max sequence length no check
     has counted yet: what saving a project costs now (the bounded read, the count queued). Before, the save ran
     check_project's load_tokenizer + inspect_dataset of the first 8 MiB: the "before" row's work.
2. flood: gunicorn with 3 sync workers (as the Dockerfile runs it); member A sends ten checks of the dataset at once
   (ten connections) while member B asks GET /projects/ again and again; B's slowest answer, and A's answers by
   status. Run with the per-member cap (MTM_EXPENSIVE_REQUESTS_PER_MEMBER=2, the default) and without it (0).

Exit status 1 when an answer is not the expected one. Nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # also runnable as `python bench/web_memory.py`

from bench import load_portal  # noqa: E402
from bench.upload_rss import PeakSampler, kib, write_dataset  # noqa: E402

MIB = 1024 * 1024
MEMBER_A = "flooding-member"
MODES = ("before", "after", "worker", "save")
SAVE_MAX_SEQ_LENGTH = 256  # not the checks' 512: the save finds no count and queues one
FLOOD_CHECKS = 10


# --- the child: one measurement in a fresh process ---------------------------------------------------------------


def child(mode: str, dataset: str, model_name: str) -> dict:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from projects.models import TokenCount

    small = Path(dataset).with_name("warm-up.jsonl")
    small.write_text('{"prompt": "a", "completion": "b"}\n')
    user = get_user_model().objects.get(username=MEMBER_A)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    hx = {"HTTP_HX_REQUEST": "true", "secure": True}
    warm = client.get("/projects/check-dataset/", {"dataset_path": str(small)}, **hx)
    assert warm.status_code == 200, warm.content[:500]
    from models_registry.lookup import resolve_model

    resolve_model(model_name, None)  # the model box's check, answered before the dataset is typed
    params = {"dataset_path": dataset, "model_name": model_name, "max_seq_length": "512"}
    pid = os.getpid()
    time.sleep(0.5)
    baseline = kib(pid, "VmRSS") or 0
    answer = ""
    with PeakSampler(pid) as sampler:
        started = time.monotonic()
        if mode == "before":
            from models_registry.lookup import dataset_roots, resolve_model
            from projects.datasets import check_dataset_path, inspect_dataset
            from projects.services import load_tokenizer

            located = check_dataset_path(dataset, dataset_roots())
            tokenizer = load_tokenizer(resolve_model(model_name, None))
            report = inspect_dataset(located.path, tokenizer, 512, model=f"'{model_name}'")
            answer = f"{report.rows} rows, token stats {'shown' if report.token_stats else 'missing'}"
        elif mode == "after":
            response = client.get("/projects/check-dataset/", params, **hx)
            html = response.content.decode()
            answer = f"HTTP {response.status_code}, " + ("Counting tokens…" if "Counting tokens" in html else "no poll")
        elif mode == "save":
            posted = _new_project_form(dataset, model_name)
            response = client.post("/projects/new/", posted, secure=True)
            count = TokenCount.objects.filter(max_seq_length=SAVE_MAX_SEQ_LENGTH).first()
            answer = f"HTTP {response.status_code}, token count {count.state if count else 'none'}"
        else:
            from projects.datasets.token_counting import count_tokens

            count = TokenCount.objects.get(state=TokenCount.State.PENDING)
            count_tokens(count.pk, dataset, user.pk)
            count.refresh_from_db()
            answer = f"count {count.state}, {count.result.get('rows')} rows"
        seconds = time.monotonic() - started
    return {
        "mode": mode,
        "baseline_mb": round(baseline / 1024, 1),
        "growth_mb": round((sampler.peak - baseline) / 1024, 1),
        "seconds": round(seconds, 2),
        "answer": answer,
    }


def _new_project_form(dataset: str, model_name: str) -> dict[str, str]:
    """The new-project form as a browser posts it: every box's initial value, then the dataset, model and folder."""
    from projects.forms import ProjectForm

    posted = {
        name: "on" if value is True else str(value)
        for name, value in ProjectForm.initial_for(None).items()
        if value is not False and value is not None
    }
    outputs = Path(dataset).parent.parent / "outputs" / "saved"
    return {
        **posted,
        "name": "saved by the bench",
        "model_name": model_name,
        "dataset_path": dataset,
        "output_directory": str(outputs),
        "max_seq_length": str(SAVE_MAX_SEQ_LENGTH),
    }


def measure(env: dict[str, str], mode: str, dataset: Path, model_name: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bench.web_memory", "--child", mode, "--dataset", str(dataset), "--model", model_name],
        cwd=load_portal.REPO_ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "mtm.settings"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"the {mode} measurement failed:\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the flood: ten checks by one member, another member's list page ---------------------------------------------


def flood(tmp: Path, env: dict[str, str], token: str, password: str, password_a: str, dataset: Path, model: str):
    from bench.load import Client

    portal = load_portal.serve(tmp, env, 3, token, password, "SQLite (temporary file)", [model], ("--timeout", "120"))
    try:
        member_b = Client(portal)
        member_b.sign_in()
        flooders = [Client(replace(portal, username=MEMBER_A, password=password_a)) for _ in range(FLOOD_CHECKS)]
        for client in flooders:
            client.sign_in()
        query = urlencode({"dataset_path": str(dataset), "model_name": model, "max_seq_length": "512"})
        statuses: list[int] = []
        lock = threading.Lock()
        go = threading.Event()

        def check(client: Client) -> None:
            go.wait()
            status, _ = client.send(
                "GET", f"/projects/check-dataset/?{query}", None, {"HX-Request": "true", **client.cookie_header()}
            )
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=check, args=(c,)) for c in flooders]
        for thread in threads:
            thread.start()
        go.set()
        page_seconds = []
        page_statuses = set()
        while any(t.is_alive() for t in threads) or len(page_seconds) < 5:
            started = time.monotonic()
            status, _ = member_b.send("GET", "/projects/", None, member_b.cookie_header())
            page_seconds.append(time.monotonic() - started)
            page_statuses.add(status)
        for thread in threads:
            thread.join()
    finally:
        load_portal.stop(portal)
    return {
        "checks_by_status": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "other_member_pages": len(page_seconds),
        "other_member_max_s": round(max(page_seconds), 3),
        "other_member_median_s": round(sorted(page_seconds)[len(page_seconds) // 2], 3),
        "other_member_statuses": sorted(page_statuses),
    }


ADD_MEMBER = (
    "import os; from django.contrib.auth import get_user_model; "
    "get_user_model().objects.create_user(os.environ['MTM_BENCH_USER'], password=os.environ['MTM_BENCH_PASSWORD'])"
)


def run(tmp: Path, size_mb: int) -> dict:
    import secrets

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "torchinductor")
    env = load_portal.portal_env(tmp, "")
    [model] = load_portal.fill_cache(Path(env["HF_HUB_CACHE"]), 0)
    token, password = load_portal.staff_user(env)
    password_a = secrets.token_urlsafe(18)
    load_portal.manage({**env, "MTM_BENCH_USER": MEMBER_A, "MTM_BENCH_PASSWORD": password_a}, "shell", "-c", ADD_MEMBER)
    datasets = tmp / "datasets"
    datasets.mkdir(exist_ok=True)
    (tmp / "outputs").mkdir(exist_ok=True)
    dataset = datasets / "train.jsonl"
    size = write_dataset(dataset, size_mb)
    memory = {mode: measure(env, mode, dataset, model) for mode in MODES}
    floods = {}
    for cap in ("2", "0"):
        # A new dataset file each time, so no count is found done from the run before.
        fresh = datasets / f"flood-{cap}.jsonl"
        write_dataset(fresh, size_mb)
        with fresh.open("a") as out:
            out.write(json.dumps({"prompt": f"cap {cap}", "completion": " end"}) + "\n")
        floods[cap] = flood(
            tmp, {**env, "MTM_EXPENSIVE_REQUESTS_PER_MEMBER": cap}, token, password, password_a, fresh, model
        )
    problems = []
    if not memory["after"]["answer"].startswith("HTTP 200, Counting"):
        problems.append(f"after: {memory['after']['answer']}")
    if not memory["worker"]["answer"].startswith("count done"):
        problems.append(f"worker: {memory['worker']['answer']}")
    if not memory["save"]["answer"].startswith("HTTP 302, token count pending"):
        problems.append(f"save: {memory['save']['answer']}")
    for cap, figures in floods.items():
        if figures["other_member_statuses"] != [200]:
            problems.append(f"cap {cap}: GET /projects/ answered {figures['other_member_statuses']}")
    return {"dataset_bytes": size, "model": model, "memory": memory, "flood": floods, "problems": problems}


def print_report(result: dict) -> None:
    print(f"dataset: {result['dataset_bytes'] / MIB:.1f} MiB of JSON Lines; model {result['model']}")
    for figures in result["memory"].values():
        print(
            f"  {figures['mode']:<7} baseline {figures['baseline_mb']:>6.1f} MB   peak +{figures['growth_mb']:.1f} MB"
            f"   {figures['seconds']:>6.2f} s   {figures['answer']}"
        )
    for cap, figures in result["flood"].items():
        print(
            f"  flood, cap {cap}: checks {figures['checks_by_status']}; the other member's GET /projects/ "
            f"x{figures['other_member_pages']}: max {figures['other_member_max_s']} s, "
            f"median {figures['other_member_median_s']} s"
        )
    for problem in result["problems"]:
        print(f"  UNEXPECTED {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=8, help="size of the generated JSON Lines file")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.dataset, args.model)))
        return 0
    with tempfile.TemporaryDirectory(prefix="mtm-web-memory-") as tmp:
        print(f"preparing a throwaway portal in {tmp} ...", flush=True)
        result = run(Path(tmp), args.size_mb)
    print_report(result)
    if args.json:
        print(json.dumps(result))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    load_portal.run_as_script(main)
