"""MTM settings: everything an operator may change is read from the environment (README.md lists every variable)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from mtm.env import env_bool, env_int, env_list, env_networks, env_str
from mtm.shared.file_modes import PRIVATE_FILE_MODE
from mtm.var_ownership import check_private_key_file, own_var_dir

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("MTM_VAR_DIR", str(BASE_DIR / "var")))
own_var_dir(VAR_DIR)  # refused at start where another user owns it or may write in it


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    # A key kept beside the database, so sessions survive restarts of `make run` without any set-up.
    key_file = VAR_DIR / "secret_key"
    _write_new_key(key_file)
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{key_file} cannot be read as the portal's secret key ({exc.strerror}): it must be a regular file, not a "
            "link. Remove it (a new key is then made, and everyone signs in again) or set SECRET_KEY."
        ) from None
    with os.fdopen(fd, encoding="utf-8") as key_in:
        check_private_key_file(key_in.fileno(), key_file)
        key = key_in.read().strip()
    if not key:
        raise ImproperlyConfigured(f"{key_file} is empty. Remove it (a new key is then made) or set SECRET_KEY.")
    return key


def _write_new_key(key_file: Path) -> None:
    """Make `key_file` with a new key unless something has that name already. The key is written into a private
    file of a name nobody can guess (created 0600: never readable by others, not even for a moment) which is then
    linked into place; a link never replaces anything, so a second process starting at once keeps the first key and
    no process reads a half-written one."""
    staged = key_file.with_name(f".{key_file.name}-{secrets.token_hex(8)}")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(staged, flags, PRIVATE_FILE_MODE), "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(50))
        with contextlib.suppress(FileExistsError):
            os.link(staged, key_file, follow_symlinks=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Above staticfiles: runserver (make run) leaves /static/ to WhiteNoise, which answers an odd path with a 404
    # where Django's own static handler lets SuspiciousFileOperation escape as a 500.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    # For /api/v1/docs: with ninja installed as an app its Swagger page loads swagger-ui from ninja's own static
    # files (pinned with django-ninja), not from a CDN, so the docs work offline.
    "ninja",
    "mtm",
    "models_registry",
    "projects",
    "workers",
    "playground",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "mtm.urls"
WSGI_APPLICATION = "mtm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

_default_db = f"sqlite:///{VAR_DIR / 'mtm.sqlite3'}"
# Connections are kept (and checked before reuse): opening one per request costs more than most requests.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or _default_db,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the workers write to one file: wait for the lock instead of failing,
    # and take it up front so two writers never deadlock on an upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so a worker process started by the tests sees the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-mtm.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from static/ and the apps when collectstatic has not run (make run, tests); the Docker image
# runs collectstatic and whitenoise then serves STATIC_ROOT.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# Production hardening: on whenever DEBUG is off, so `manage.py check --deploy` is clean. MTM_PLAIN_HTTP (what
# `make run` sets) serves plain HTTP on a machine without a TLS proxy: no HTTPS redirect, no Secure cookies, no HSTS,
# and still no debug pages.
PLAIN_HTTP = env_bool("MTM_PLAIN_HTTP", False)
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not PLAIN_HTTP)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not PLAIN_HTTP)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not PLAIN_HTTP)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if PLAIN_HTTP else 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Sign-in throttling (mtm/throttle.py) --------------------
# Past this many failed password tries for one account from one address (or, much higher, from one address for
# any account), every password form makes the next try wait: 30 seconds, doubling per failure up to the longest
# delay. One failure is forgotten per longest delay. A stranger's failures never hold back the owner's address.
MTM_LOGIN_MAX_FAILURES = env_int("MTM_LOGIN_MAX_FAILURES", 5)
MTM_LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("MTM_LOGIN_MAX_FAILURES_PER_ADDRESS", 100)
MTM_LOGIN_MAX_DELAY_MINUTES = env_int("MTM_LOGIN_MAX_DELAY_MINUTES", 15)
# The reverse proxies in front of the portal (addresses or networks, ',' or ':' separated). Only a request whose
# peer is one of them has its X-Forwarded-For read (from the right) for the client's address; empty: never read.
MTM_TRUSTED_PROXIES = env_networks("MTM_TRUSTED_PROXIES")

# --- Expensive requests (mtm/request_limits.py) --------------------
# How many dataset checks and chat-template renders one member may have in progress at once (all web processes
# together); more are answered 429 with when to retry. 0: no limit.
MTM_EXPENSIVE_REQUESTS_PER_MEMBER = env_int("MTM_EXPENSIVE_REQUESTS_PER_MEMBER", 2)
# How often a download that is still streaming marks its slot as alive (well under request_limits.STALE_AFTER).
MTM_REQUEST_SLOT_REFRESH_SECONDS = env_int("MTM_REQUEST_SLOT_REFRESH_SECONDS", 30)

# --- Model resolution -------------------------------------------------------------------------
# Used when the portal settings row has none (`:`-separated, like PATH). The defaults keep a fresh
# `make run` usable: outputs and server-side datasets under var/.
MTM_OUTPUT_ROOTS = env_list("MTM_OUTPUT_ROOTS", sep=":") or [str(VAR_DIR / "outputs")]
MTM_DATASET_ROOTS = env_list("MTM_DATASET_ROOTS", sep=":") or [str(VAR_DIR / "datasets")]
MTM_LOW_DISK_BYTES = env_int("MTM_LOW_DISK_BYTES", 10 * 1024**3)
# The longest one dataset row may be in its file, wherever rows are read (the form's sample, the resolve stage, the
# trainer): a longer one is refused by number, never tokenized. 1 MiB: 8 bytes for each of the 131,072 tokens of the
# longest max_seq_length accepted (projects.datasets.row_size).
MTM_DATASET_MAX_ROW_BYTES = env_int("MTM_DATASET_MAX_ROW_BYTES", 131_072 * 8)
if MTM_DATASET_MAX_ROW_BYTES < 1:
    raise ImproperlyConfigured(f"MTM_DATASET_MAX_ROW_BYTES={MTM_DATASET_MAX_ROW_BYTES} must be at least 1 (bytes).")
# The most rows one dataset (or eval file) may have: a row costs the worker the same whatever its size, so a file of
# tiny rows costs far more than its bytes suggest. A file with more is refused, named, at the form's check, the save,
# the upload and the resolve stage, which stops reading at the first row past it (projects.datasets.row_count).
# 2,000,000 fits the fine-tuning sets people train on (Alpaca 52k rows, OpenHermes 2.5 about 1M).
MTM_DATASET_MAX_ROWS = env_int("MTM_DATASET_MAX_ROWS", 2_000_000)
if MTM_DATASET_MAX_ROWS < 1:
    raise ImproperlyConfigured(f"MTM_DATASET_MAX_ROWS={MTM_DATASET_MAX_ROWS} must be at least 1 (rows).")
# The most files and folders, and the deepest nesting, a model's folder may have (a snapshot, an override, a published
# model, also .no_exist/<commit> and refs/): a real one holds a few hundred files a few folders deep; a folder past
# these is refused, named, before anything in it is read (mtm.shared.bounded_walk).
MTM_MODEL_FOLDER_MAX_ENTRIES = env_int("MTM_MODEL_FOLDER_MAX_ENTRIES", 5_000)
MTM_MODEL_FOLDER_MAX_DEPTH = env_int("MTM_MODEL_FOLDER_MAX_DEPTH", 16)
if MTM_MODEL_FOLDER_MAX_ENTRIES < 1 or MTM_MODEL_FOLDER_MAX_DEPTH < 1:
    raise ImproperlyConfigured("MTM_MODEL_FOLDER_MAX_ENTRIES and MTM_MODEL_FOLDER_MAX_DEPTH must be at least 1.")
# The most folder entries one cold model listing reads in the repos of one owner (the uid owning the repo folders;
# models_registry.listing): a cache of hundreds of real models lists far fewer; past it, that owner's repos still to
# scan are shown "not checked" for that request, and other owners' repos are read on their own budgets.
MTM_MODEL_LISTING_MAX_ENTRIES = env_int("MTM_MODEL_LISTING_MAX_ENTRIES", 200_000)
if MTM_MODEL_LISTING_MAX_ENTRIES < 1:
    raise ImproperlyConfigured(f"MTM_MODEL_LISTING_MAX_ENTRIES={MTM_MODEL_LISTING_MAX_ENTRIES} must be at least 1.")
# transformers' own verdict on a model (models_registry.deep_verdict) runs on a worker in a child process stopped
# past these limits (CPU seconds, MB of memory beyond what the worker had): a model whose check hangs or crashes
# gets a verdict saying so.
MTM_VERDICT_CPU_SECONDS = env_int("MTM_VERDICT_CPU_SECONDS", 120)
MTM_VERDICT_MEMORY_MB = env_int("MTM_VERDICT_MEMORY_MB", 4096)
# A model's chat template renders in a child process of the web worker stopped past these limits (CPU seconds,
# megabytes of memory beyond what the child starts with); such a template is reported as the model's problem.
MTM_TEMPLATE_CPU_SECONDS = env_int("MTM_TEMPLATE_CPU_SECONDS", 10)
MTM_TEMPLATE_MEMORY_MB = env_int("MTM_TEMPLATE_MEMORY_MB", 512)
# The workers fill transformers' verdict on every listed model in the background (models_registry.verdict_fill): beat
# sends the fill every MTM_VERDICT_FILL_SECONDS, which keeps at most MTM_VERDICT_FILL_BATCH checks pending (0: no fill,
# and the Models page asks for none either; models are then checked only when someone looks one up). The Models page
# asks for the models it shows at once; the period bounds how late the others, and a folder changed in place, are
# noticed. A pass only fingerprints the folders (about 0.1 s for 200 models), so once a minute costs next to nothing.
MTM_VERDICT_FILL_BATCH = env_int("MTM_VERDICT_FILL_BATCH", 4)
MTM_VERDICT_FILL_SECONDS = env_int("MTM_VERDICT_FILL_SECONDS", 60)

# --- Runs ---------------------------------------------------------------------------------------------
# Runs one member may have live (queued, resolving, training or validating) before Start is refused, and taken by
# workers at once (the fair share); 0: no cap. The setting starts with this value; staff change it on the Settings
# or GPUs page (workers.SchedulingSettings.live_runs_per_member).
MTM_LIVE_RUNS_PER_MEMBER = env_int("MTM_LIVE_RUNS_PER_MEMBER", 2)
if MTM_LIVE_RUNS_PER_MEMBER < 0:
    raise ImproperlyConfigured(
        f"MTM_LIVE_RUNS_PER_MEMBER={MTM_LIVE_RUNS_PER_MEMBER} is negative; give 0 (no cap) or more."
    )
# A worker beats for its run every MTM_HEARTBEAT_SECONDS; a live run silent for MTM_HEARTBEAT_TIMEOUT is failed
# as "worker lost". Training stops with a clear failure when the output disk has less than MTM_MIN_FREE_BYTES.
MTM_HEARTBEAT_SECONDS = env_int("MTM_HEARTBEAT_SECONDS", 5)
MTM_HEARTBEAT_TIMEOUT = env_int("MTM_HEARTBEAT_TIMEOUT", 90)
MTM_MIN_FREE_BYTES = env_int("MTM_MIN_FREE_BYTES", 256 * 1024**2)
# The most bytes a LoRA adapter download streams (all its files together); a larger adapter is refused, naming
# the file that does not fit (projects.publishing.adapter_archive).
MTM_ADAPTER_ARCHIVE_MAX_BYTES = env_int("MTM_ADAPTER_ARCHIVE_MAX_BYTES", 8 * 1024**3)
# Each Celery worker rewrites its row (host, devices, versions) every MTM_WORKER_REPORT_SECONDS; one silent for
# MTM_WORKER_GONE_SECONDS is shown as gone and no run is sent to it.
MTM_WORKER_REPORT_SECONDS = env_int("MTM_WORKER_REPORT_SECONDS", 10)
MTM_WORKER_GONE_SECONDS = env_int("MTM_WORKER_GONE_SECONDS", max(30, 3 * MTM_WORKER_REPORT_SECONDS))
# A worker gone (last report) longer than MTM_WORKER_FORGET_SECONDS is folded away on the GPUs page: a short list
# under the hosts, not a card among the live ones.
MTM_WORKER_FORGET_SECONDS = env_int("MTM_WORKER_FORGET_SECONDS", 24 * 3600)
# How often Celery beat sends the reaper (projects.reap_stale_runs); pages and the API never reap.
MTM_REAP_SECONDS = env_int("MTM_REAP_SECONDS", max(5, MTM_HEARTBEAT_TIMEOUT // 3))
if MTM_REAP_SECONDS < 1:
    raise ImproperlyConfigured(f"MTM_REAP_SECONDS={MTM_REAP_SECONDS} must be at least 1 (seconds).")

# --- Playground ---------------------------------------------------------------------------------------
# An inference worker keeps the last model it answered with loaded for MTM_PLAYGROUND_IDLE_SECONDS, so the next message
# is fast. A message asks for at most MTM_PLAYGROUND_MAX_NEW_TOKENS new tokens; a member may send at most
# MTM_PLAYGROUND_MESSAGES_PER_MINUTE (0: no limit). The worker writes the answer so far every
# MTM_PLAYGROUND_FLUSH_SECONDS; a generation whose worker is silent for MTM_PLAYGROUND_HEARTBEAT_TIMEOUT, or that no
# worker took within MTM_PLAYGROUND_QUEUE_TIMEOUT, is failed by the periodic reaper.
MTM_PLAYGROUND_IDLE_SECONDS = env_int("MTM_PLAYGROUND_IDLE_SECONDS", 300)
MTM_PLAYGROUND_MAX_NEW_TOKENS = env_int("MTM_PLAYGROUND_MAX_NEW_TOKENS", 1024)
MTM_PLAYGROUND_MESSAGES_PER_MINUTE = env_int("MTM_PLAYGROUND_MESSAGES_PER_MINUTE", 20)
MTM_PLAYGROUND_FLUSH_SECONDS = float(env_int("MTM_PLAYGROUND_FLUSH_MS", 200)) / 1000
MTM_PLAYGROUND_HEARTBEAT_TIMEOUT = env_int("MTM_PLAYGROUND_HEARTBEAT_TIMEOUT", 60)
MTM_PLAYGROUND_QUEUE_TIMEOUT = env_int("MTM_PLAYGROUND_QUEUE_TIMEOUT", 600)
# How many answers one member may have queued or being generated at once (all conversations together); a send beyond
# it is refused until one ends. Members waiting for the inference workers are served in turn.
MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER = env_int("MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER", 2)
if MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER < 1:
    raise ImproperlyConfigured(
        f"MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER={MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER} must be at least 1."
    )
# To save model loads, an inference worker takes answers for the model it holds ahead of answers that need a load, and
# of those, answers of members who caused fewer loads in the last MTM_PLAYGROUND_LOAD_WINDOW_SECONDS first; but it
# passes over one answer at most MTM_PLAYGROUND_MAX_PASS_OVERS times before taking it in its turn (0: strict turns).
MTM_PLAYGROUND_MAX_PASS_OVERS = env_int("MTM_PLAYGROUND_MAX_PASS_OVERS", 3)
MTM_PLAYGROUND_LOAD_WINDOW_SECONDS = env_int("MTM_PLAYGROUND_LOAD_WINDOW_SECONDS", 600)
for _name in ("MTM_PLAYGROUND_MAX_PASS_OVERS", "MTM_PLAYGROUND_LOAD_WINDOW_SECONDS"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name}={globals()[_name]} must be 0 or more.")
for _name in ("MTM_PLAYGROUND_IDLE_SECONDS", "MTM_PLAYGROUND_MAX_NEW_TOKENS", "MTM_PLAYGROUND_HEARTBEAT_TIMEOUT"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name}={globals()[_name]} must be at least 1.")

# --- Uploads ------------------------------------------------------------------------------------------
# An uploaded dataset no project uses is removed by the periodic cleanup once it is this many hours old (time
# enough to finish the form it was uploaded from). The per-user quota is a portal setting (Settings page).
MTM_UPLOAD_GRACE_HOURS = env_int("MTM_UPLOAD_GRACE_HOURS", 24)

# --- Celery -----------------------------------------------------------------------------------
# The embedded default is kombu's filesystem transport: no server to install for `make run`.
_broker_dir = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or env_str("REDIS_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 12 * 3600}
# Results are only kept for tasks that ask (resolve_model); run state lives on the TrainingRun row.
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else f"file://{VAR_DIR / 'results'}"
)
if CELERY_RESULT_BACKEND.startswith("file://"):
    (VAR_DIR / "results").mkdir(parents=True, exist_ok=True)
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 3
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Celery autodiscovers <app>.tasks only; the runs' and datasets' tasks live in subpackages.
CELERY_IMPORTS = ["projects.runs.tasks", "projects.datasets.tasks"]
# A run is one task on the worker that trains it (resolve against its own cache, train, validate): it waits
# "queued" in its queue until a worker is free, with nothing to reap. Start may send it to a narrower queue
# (projects.runs.scheduling.placement).
CELERY_TASK_ROUTES = {
    "projects.resolve_run": {"queue": "training"},
    # Playground messages go to inference workers (`runworker --inference`), which keep a model loaded.
    "playground.generate": {"queue": "inference"},
    # Work a member can set off, each kind on a queue with workers of its own: transformers' checks of a model (one
    # may run for minutes on a planted model), and token counts, which a member waits for on the dataset form.
    "models_registry.check_model_deep": {"queue": "checks"},
    "models_registry.fill_verdicts": {"queue": "checks"},
    "models_registry.resolve_model": {"queue": "checks"},
    "projects.count_dataset_tokens": {"queue": "counts"},
}
# Everything else (CELERY_TASK_DEFAULT_QUEUE, "default") is a periodic job below, run by a worker of its own.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
# Periodic jobs, sent by `celery -A mtm beat` (started by `make run` and the compose file's beat service). Each
# expires after one period, so a pile of them never waits for a worker that is down. The fill asks for checks, so it
# goes to the checks queue (routes above); the others to default.
CELERY_BEAT_SCHEDULE = {
    "reap-stale-runs": {
        "task": "projects.reap_stale_runs",
        "schedule": float(MTM_REAP_SECONDS),
        "options": {"expires": float(MTM_REAP_SECONDS)},
    },
    "reap-lost-generations": {
        "task": "playground.reap_lost_generations",
        "schedule": float(MTM_REAP_SECONDS),
        "options": {"expires": float(MTM_REAP_SECONDS)},
    },
    "fill-model-verdicts": {
        "task": "models_registry.fill_verdicts",
        "schedule": float(max(1, MTM_VERDICT_FILL_SECONDS)),
        "options": {"expires": float(max(1, MTM_VERDICT_FILL_SECONDS))},
    },
    "cleanup-unreferenced-uploads": {
        "task": "projects.cleanup_uploads",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
