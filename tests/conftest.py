from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


from tests.workers import WORKER_QUEUES  # noqa: E402 - after the environment above is set

pytest_plugins = ["tests.file_order"]  # runs the longest test files first

# --- Which tests the PostgreSQL pass runs ---------------------------------------------------------------------------

# A test touches the database only through one of these (pytest-django blocks any other way) or a fixture built on
# them, which puts them in its closure. django_db_blocker is left out: an autouse fixture of pytest-django requests it.
DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "django_db_setup",
        "live_server",
    }
)
NO_DATABASE_REASON = (
    "they use no database (no db, transactional_db, live_server or django_db_setup fixture, no django_db mark), "
    "or they are slow or browser tests whose subject is not the database (no `database` mark), so the SQLite pass "
    "has run them already"
)
NO_DATABASE_KEY = "mtm_no_database_deselected"
_deselected_count = pytest.StashKey[int]()


def uses_database(item: pytest.Item) -> bool:
    return bool(DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))) or bool(
        item.get_closest_marker("django_db")
    )


def is_database_test(item: pytest.Item) -> bool:
    """Whether the PostgreSQL pass runs `item`: it uses the database and is fast, or its subject is how the database
    behaves (marker `database`: locks between processes, the rows a worker writes). A slow test or a browser test
    spends its time training or clicking; the SQLite pass has shown that, and on PostgreSQL it would repeat it."""
    if not uses_database(item):
        return False
    heavy = item.get_closest_marker("slow") or item.get_closest_marker("browser")
    return not heavy or bool(item.get_closest_marker("database"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, deselect what is not a database test: it would only repeat what the SQLite pass ran."""
    from django.conf import settings

    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        return
    dropped = [item for item in items if not is_database_test(item)]
    if dropped:
        items[:] = [item for item in items if is_database_test(item)]
        config.hook.pytest_deselected(items=dropped)
    config.stash[_deselected_count] = len(dropped)
    if hasattr(config, "workeroutput"):  # a pytest-xdist process: its controller prints the count
        config.workeroutput[NO_DATABASE_KEY] = len(dropped)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    count = getattr(node, "workeroutput", {}).get(NO_DATABASE_KEY)
    if count is not None:  # every xdist process collects the same tests, so any one's count is the pass's
        node.config.stash[_deselected_count] = count


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    count = config.stash.get(_deselected_count, 0)
    if count:
        terminalreporter.write_line(f"PostgreSQL pass: {count} tests deselected: {NO_DATABASE_REASON}.")


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing(django_test_environment) -> None:
    """MD5 for every password a test sets or checks: the default PBKDF2's cost (a quarter second a hash here) is the
    point in production, and in the suite it was minutes a pass. A test about hashing sets its own hasher."""
    from django.conf import settings
    from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty HF hub cache that the portal uses (through HF_HUB_CACHE; the settings row is blank)."""
    cache = tmp_path / "hf-cache" / "hub"
    cache.mkdir(parents=True)
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A real tiny Llama (trained BPE tokenizer, random weights, chat template) saved with save_pretrained."""
    from models_registry.demo import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture
def tiny_llama_in_cache(hf_cache, tiny_llama_dir) -> tuple[str, Path]:
    """The tiny Llama laid into the cache as huggingface_hub lays a download. Returns (name, snapshot)."""
    from models_registry.demo import install_into_cache

    name = "test-org/tiny-llama"
    return name, install_into_cache(tiny_llama_dir, hf_cache, name)


@pytest.fixture
def copy_of_tiny_llama(tmp_path, tiny_llama_dir) -> Path:
    dest = tmp_path / "tiny-llama-copy"
    shutil.copytree(tiny_llama_dir, dest)
    return dest


# --- Real Redis and real Celery workers -----------------------------------------------------------


_redis_claim = None  # this process's tests.redis_server.DatabaseClaim, once a test asked for Redis


@pytest.fixture(scope="module", autouse=True)
def empty_redis_after_the_module():
    """Tasks a module queued that no worker of its own took (a page asking a worker for a check) would otherwise be
    taken by the next module's worker, which runs them against that module's database and files."""
    yield
    if _redis_claim is not None:
        _redis_claim.clear()


@pytest.fixture(scope="session")
def redis_url():
    """A Redis URL on a database index this session alone uses (see tests/redis_server.py).

    The server is REDIS_URL's when it answers, else 127.0.0.1:6379, else a private redis-server started for
    the session and stopped after it, so plain `.venv/bin/pytest` works as well as `make test`.
    """
    from tests.redis_server import DatabaseClaim, find_server

    server_url, private = find_server()
    global _redis_claim
    claim = _redis_claim = DatabaseClaim(server_url)
    yield claim.url
    _redis_claim = None
    claim.release()
    if private is not None:
        private.stop()


@pytest.fixture(scope="session")
def celery_broker(redis_url):
    """This process's Celery app publishes to, and reads results from, the session's Redis."""
    from tests.workers import app_publishing_to

    with app_publishing_to(redis_url):
        yield redis_url


@pytest.fixture
def start_worker(transactional_db, celery_broker, tmp_path):
    """Start real `celery -A mtm worker` processes: start_worker(queues=WORKER_QUEUES, extra_env=None).

    The handle has .pid, .wait_ready(timeout), .stop() (SIGTERM, wait), .kill() (SIGKILL to
    its process group; returns once all of it is gone) and .log_text().
    A worker uses the current test database and the session's Redis; this fixture requests
    `transactional_db` because a worker is another process and sees only committed rows. Every worker
    started is stopped when the test ends.
    """
    from tests.workers import CeleryWorker

    started = []

    def start(queues: str = WORKER_QUEUES, extra_env: dict[str, str] | None = None):
        log = tmp_path / f"celery-worker-{len(started) + 1}.log"
        worker = CeleryWorker(celery_broker, log, queues, extra_env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker, celery_broker, tmp_path_factory):
    """One running worker (WORKER_QUEUES) for the test module. Tests using it must request
    `transactional_db` so the worker sees their rows; settings it needs must be saved in the database.
    Module scope, not session: a module whose tests start workers of their own (`start_worker`, e.g. with a fault
    injected) must not find this one still consuming the same queues."""
    from tests.workers import CeleryWorker

    worker = CeleryWorker(celery_broker, tmp_path_factory.mktemp("celery") / "worker.log", WORKER_QUEUES, None)
    try:
        yield worker.wait_ready()
    finally:
        worker.stop_and_forget(django_db_blocker)


# --- Runs trained once per session (tests/trained_runs.py) -------------------------------------------------------


@pytest.fixture(scope="session")
def trained_runs_folder(request, tmp_path_factory) -> Path:
    """Where the session keeps its trained runs: shared by the pytest-xdist processes of one session (their base
    temporary folders' parent), this process's own otherwise."""
    if hasattr(request.config, "workerinput"):
        return tmp_path_factory.getbasetemp().parent / "trained-runs"
    return tmp_path_factory.mktemp("trained-runs")


@pytest.fixture(scope="session")
def trained_lora_run(django_db_setup, django_db_blocker, celery_broker, tiny_llama_dir, trained_runs_folder):
    """The session's LoRA run (tests.trained_runs.LORA), trained once by a real worker; copy_trained_run gives a test
    its own copy."""
    from tests.trained_runs import LORA, trained_once

    return trained_once(LORA, trained_runs_folder, tiny_llama_dir, celery_broker, django_db_blocker)


@pytest.fixture(scope="session")
def trained_full_run(django_db_setup, django_db_blocker, celery_broker, tiny_llama_dir, trained_runs_folder):
    """The session's full fine-tune (tests.trained_runs.FULL), trained once by a real worker."""
    from tests.trained_runs import FULL, trained_once

    return trained_once(FULL, trained_runs_folder, tiny_llama_dir, celery_broker, django_db_blocker)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, request) -> None:
    """Test databases named after this process (var/test-mtm-p<pid>.sqlite3, test_test_p<pid>), so two
    sessions at once never drop each other's. `--reuse-db` keeps the fixed names it needs."""
    if not request.config.getvalue("reuse_db"):
        from tests.isolation import suffix_test_databases

        suffix_test_databases(f"p{os.getpid()}")


@pytest.fixture
def portal_roots(db, hf_cache, tmp_path, settings) -> Path:
    """The portal set up as staff would for one test: the Model Cache Path is `hf_cache`, the output root
    tmp/outputs (created), the dataset root tmp/datasets holding qa.jsonl, uploads under tmp/media. Saved in the
    database, so a worker started by the test sees it too (with `transactional_db`). Returns tmp_path."""
    from models_registry.models import PortalSettings
    from tests.pipeline_helpers import QA_ROWS, write_jsonl

    settings.MEDIA_ROOT = tmp_path / "media"
    row = PortalSettings.load()
    row.model_cache_path = str(hf_cache)
    row.allowed_output_roots = [str(tmp_path / "outputs")]
    row.allowed_dataset_roots = [str(tmp_path / "datasets")]
    row.save()
    (tmp_path / "outputs").mkdir()
    write_jsonl(tmp_path / "datasets" / "qa.jsonl", QA_ROWS)
    return tmp_path


@pytest.fixture
def browser_member(portal_roots, transactional_db, settings):
    """For the browser tests: a member who signs in through the pages (tests.browser_helpers.MEMBER and
    MEMBER_PASSWORD), the portal set up by `portal_roots` (committed rows, so a worker and the live server see them),
    and none of the production HTTPS settings, since the live server speaks plain HTTP."""
    from django.contrib.auth.models import User

    from tests.browser_helpers import MEMBER, MEMBER_PASSWORD, PLAIN_HTTP_SETTINGS

    for name, value in PLAIN_HTTP_SETTINGS.items():
        setattr(settings, name, value)
    return User.objects.create_user(MEMBER, password=MEMBER_PASSWORD)


@pytest.fixture
def team(portal_roots):
    """Two members and a staff user, with the portal's roots under `root`."""
    from django.contrib.auth.models import User

    return {
        "root": portal_roots,
        "alice": User.objects.create_user("alice"),
        "mallory": User.objects.create_user("mallory"),
        "staff": User.objects.create_user("staffer", is_staff=True),
    }


# --- Shared by the test files split so that each holds at most two trainings -------------------------------------


@pytest.fixture
def portal(portal_roots, transactional_db):
    """For the tests that start runs on a real worker (tests.pipeline_helpers.make_project): a member, alice, and the
    portal's roots (committed rows, so the worker sees them). Some modules define a `portal` of their own."""
    from django.contrib.auth.models import User

    return {"user": User.objects.create_user("alice", password="x"), "root": portal_roots}


@pytest.fixture
def qa_data(tmp_path) -> Path:
    """For the trainer tests (tests/trainer_helpers.py): 40 copies of its QA row in a JSONL file."""
    from tests.trainer_helpers import QA, write_rows

    return write_rows(tmp_path / "qa.jsonl", [QA] * 40)


@pytest.fixture(scope="module")
def trainer_inputs(tmp_path_factory, tiny_llama_dir):
    """For the tests of the trainer under torchrun (tests.multi_device_helpers.child): a folder holding the tiny Llama
    (model) and its dataset (data.jsonl)."""
    from tests.multi_device_helpers import ROWS
    from tests.pipeline_helpers import write_jsonl

    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "model").symlink_to(tiny_llama_dir)
    write_jsonl(tmp / "data.jsonl", ROWS)
    return tmp


@pytest.fixture
def two_process_worker(start_worker):
    """A real worker owning two CPU processes (a run asking for 2 devices goes to it), reporting every second."""
    return start_worker(
        queues="default,training,devices2",
        extra_env={"MTM_CPU_PROCESSES": "2", "MTM_HEARTBEAT_SECONDS": "1", "MTM_WORKER_REPORT_SECONDS": "1"},
    ).wait_ready()


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    """For the DPO trainer tests: 20 sample preference pairs in a JSONL file."""
    from projects.datasets.samples import sample_pairs
    from tests.trainer_helpers import write_rows

    return write_rows(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", sample_pairs(20))
