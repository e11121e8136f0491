"""docker-compose.yml and the Dockerfile agree with the code (there is no Docker engine here: read, don't run)."""

from __future__ import annotations

import ast
import importlib
import ipaddress
import json
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent.parent
APP_SERVICES = ("web", "worker", "counts", "periodic", "beat", "trainer-gpu0", "trainer-gpu1", "playground-gpu0")
# Plain Celery workers: model checks, token counts, and the periodic jobs (queue default) each have their own.
CELERY_WORKERS = ("worker", "counts", "periodic")
TRAINERS = ("trainer-gpu0", "trainer-gpu1")
PLAYGROUND = ("playground-gpu0",)
FIRST_PARTY = ("mtm", "models_registry", "projects")
# Variables that name a folder, and so must sit on a mounted volume to survive a container restart.
PATH_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "MTM_OUTPUT_ROOTS", "MTM_DATASET_ROOTS", "MEDIA_ROOT")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())


def command_words(service: dict) -> list[str]:
    command = service["command"]
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if words[:2] == ["sh", "-c"]:
        words = shlex.split(words[2])
    return words


def option_value(words: list[str], *names: str) -> str | None:
    for i, word in enumerate(words):
        if word in names and i + 1 < len(words):
            return words[i + 1]
        for name in names:
            if name.startswith("--") and word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def environment_names_read_by_code() -> set[str]:
    """Upper-case string constants in first-party modules that read the environment (os.environ or mtm.env)."""
    names: set[str] = set()
    for package in FIRST_PARTY:
        for path in (BASE_DIR / package).rglob("*.py"):
            source = path.read_text()
            if "migrations" in path.parts or not re.search(r"\benviron\b|\bgetenv\b|from mtm\.env import", source):
                continue
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Constant) and re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", str(node.value)):
                    names.add(node.value)
    return names


def test_the_services_exist(compose):
    assert set(compose["services"]) >= {"web", *CELERY_WORKERS, *TRAINERS, *PLAYGROUND, "redis", "postgres"}


def consumed_queues(service: dict) -> set[str]:
    """The queues a worker service consumes: a Celery command's -Q, or what `manage.py runworker` always consumes
    (the shared training queue, besides its own and capacity queues) plus its --also."""
    words = command_words(service)
    if words[:3] == ["python", "manage.py", "runworker"]:
        from workers.queues import INFERENCE_QUEUE, TRAINING_QUEUE

        always = INFERENCE_QUEUE if "--inference" in words else TRAINING_QUEUE
        return {always} | set(filter(None, (option_value(words, "--also") or "").split(",")))
    return set(option_value(words, "-Q", "--queues").split(","))


def test_web_serves_an_importable_wsgi_application(compose):
    words = command_words(compose["services"]["web"])
    target = words[words.index("gunicorn") + 1]
    module_name, _, attribute = target.partition(":")
    assert (module_name, attribute) == tuple(settings.WSGI_APPLICATION.rsplit(".", 1))
    assert callable(getattr(importlib.import_module(module_name), attribute))
    assert "migrate" in words


def test_workers_use_the_mtm_app_and_consume_every_routed_queue(compose):
    known = {settings.CELERY_TASK_DEFAULT_QUEUE} | {r["queue"] for r in settings.CELERY_TASK_ROUTES.values()}
    consumed: set[str] = set()
    for name in (*CELERY_WORKERS, *TRAINERS, *PLAYGROUND):
        queues = consumed_queues(compose["services"][name])
        assert queues <= known, f"{name} consumes {queues - known}, which no task is routed to"
        consumed |= queues
    assert consumed == known
    for name in CELERY_WORKERS:
        words = command_words(compose["services"][name])
        assert words[:1] == ["celery"] and "worker" in words and option_value(words, "-A", "--app") == "mtm"


def test_the_periodic_jobs_have_a_worker_no_other_work_reaches(compose):
    """Only periodic consumes the default queue, and it consumes nothing else: a check or a token count a member
    sets off (routed elsewhere, tests/test_checks_queue.py) can never occupy the worker the reaper needs."""
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    on_default = [
        name
        for name in (*CELERY_WORKERS, *TRAINERS, *PLAYGROUND)
        if default in consumed_queues(compose["services"][name])
    ]
    assert on_default == ["periodic"]
    assert consumed_queues(compose["services"]["periodic"]) == {default}
    assert consumed_queues(compose["services"]["worker"]) == {"checks"}
    assert consumed_queues(compose["services"]["counts"]) == {"counts"}


def test_the_playground_worker_answers_the_inference_queue_on_a_gpu_of_the_trainers_host(compose):
    from workers.management.commands.runworker import parse_gpus
    from workers.queues import INFERENCE_QUEUE

    for name in PLAYGROUND:
        service = compose["services"][name]
        words = command_words(service)
        assert words[:3] == ["python", "manage.py", "runworker"] and "--inference" in words
        assert consumed_queues(service) == {INFERENCE_QUEUE}
        assert settings.CELERY_TASK_ROUTES["playground.generate"]["queue"] == INFERENCE_QUEUE
        assert parse_gpus(option_value(words, "--gpus")) == [0]
        assert service["hostname"] == compose["services"][TRAINERS[0]]["hostname"]  # its memory counts on GPU 0


def test_two_gpu_workers_on_one_host_each_own_one_gpu(compose):
    from workers.management.commands.runworker import parse_gpus

    gpus, names = [], []
    for name in TRAINERS:
        trainer = compose["services"][name]
        words = command_words(trainer)
        assert words[:3] == ["python", "manage.py", "runworker"]  # one run at a time, its own name and queues
        gpus += parse_gpus(option_value(words, "--gpus"))
        names.append(option_value(words, "--name"))
        assert trainer["hostname"] == compose["services"][TRAINERS[0]]["hostname"]  # one host
        devices = trainer["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in device["capabilities"] for device in devices)
    assert sorted(gpus) == [0, 1] and len(set(names)) == 2


def test_one_beat_sends_every_periodic_job_to_a_queue_a_worker_consumes(compose):
    services = compose["services"]
    beats = [name for name, service in services.items() if "command" in service and "beat" in command_words(service)]
    assert beats == ["beat"]
    words = command_words(compose["services"]["beat"])
    assert words[:1] == ["celery"] and option_value(words, "-A", "--app") == "mtm"
    workers = (*CELERY_WORKERS, *TRAINERS, *PLAYGROUND)
    consumed = set().union(*(consumed_queues(compose["services"][name]) for name in workers))
    from mtm.celery import app

    app.loader.import_default_modules()
    assert "projects.reap_stale_runs" in {job["task"] for job in settings.CELERY_BEAT_SCHEDULE.values()}
    for job in settings.CELERY_BEAT_SCHEDULE.values():
        assert job["task"] in app.tasks, f"beat sends {job['task']}, which no module defines"
        route = settings.CELERY_TASK_ROUTES.get(job["task"], {}).get("queue", settings.CELERY_TASK_DEFAULT_QUEUE)
        assert route in consumed, f"{job['task']} goes to queue {route}, which no worker consumes"


def test_every_environment_variable_set_is_read_by_the_code(compose):
    read = environment_names_read_by_code()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "HF_HUB_CACHE", "MTM_ADMIN_PASSWORD"} <= read
    assert "DATABASE_URI" not in read
    for name in APP_SERVICES:
        unread = set(compose["services"][name]["environment"]) - read
        assert not unread, f"{name} sets {sorted(unread)}, which nothing in {FIRST_PARTY} reads"


def test_the_design_environment_is_set_for_every_app_service(compose):
    design = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "HF_HOME"}
    design |= {"MTM_OUTPUT_ROOTS", "MTM_DATASET_ROOTS"}
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert design <= set(environment), f"{name} lacks {sorted(design - set(environment))}"
        assert environment["DATABASE_URL"].startswith("postgres://") and "@postgres:" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"].startswith("redis://redis:")


def test_folders_named_in_the_environment_are_mounted_volumes(compose):
    named_volumes = set(compose["volumes"])
    for name in APP_SERVICES:
        service = compose["services"][name]
        mounts = {}
        for volume in service["volumes"]:
            source, target = volume.split(":")[:2]
            assert source in named_volumes, f"{name} mounts {source}, which is not a declared volume"
            mounts[PurePosixPath(target)] = source
        for variable in PATH_VARIABLES:
            for folder in filter(None, str(service["environment"].get(variable, "")).split(":")):
                folder = PurePosixPath(folder)
                assert any(folder == m or m in folder.parents for m in mounts), f"{name}: {variable}={folder}"


def test_app_services_wait_for_healthy_database_and_broker(compose):
    for name in APP_SERVICES:
        depends = compose["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    for name in ("redis", "postgres"):
        assert compose["services"][name]["healthcheck"]["test"]


def test_dockerfile_installs_a_requirements_file_that_exists():
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    installed = re.findall(r"pip install (?:[^\n]*\s)?-r (\S+)", dockerfile)
    assert installed
    for requirements in installed:
        assert (BASE_DIR / requirements).is_file()
        assert re.search(rf"^COPY .*\b{re.escape(requirements)}\b", dockerfile, re.MULTILINE)
    assert "collectstatic" in dockerfile


NGINX_CONF = BASE_DIR / "deploy" / "nginx.conf"


def nginx_directives(block: str = "") -> dict[str, list[str]]:
    """deploy/nginx.conf's directives (name -> values, in order), comments dropped; with `block`, those inside the
    first `location <block> {...}` only."""
    text = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())
    if block:
        start = text.index("{", text.index(f"location {block} "))
        depth = 0
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        text = text[start + 1 : end]
    directives: dict[str, list[str]] = {}
    for statement in re.findall(r"([a-z_]+)\s+([^;{}]*);", text):
        directives.setdefault(statement[0], []).append(statement[1].strip())
    return directives


def nginx_seconds(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(s|m)?", value).groups()
    return int(number) * (60 if unit == "m" else 1)


def nginx_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg])?", value.lower()).groups()
    return int(number) * {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def test_browsers_reach_gunicorn_only_through_the_buffering_proxy(compose):
    services = compose["services"]
    published = [name for name, service in services.items() if service.get("ports")]
    assert published == ["proxy"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    mounts = dict(reversed(volume.split(":")[:2]) for volume in proxy["volumes"])
    assert (BASE_DIR / mounts["/etc/nginx/nginx.conf"]).resolve() == NGINX_CONF
    assert "web" in proxy["depends_on"]
    assert all(port.endswith(":80") for port in proxy["ports"])
    assert "listen 80 default_server" in {f"listen {value}" for value in nginx_directives()["listen"]}


def test_the_proxy_passes_every_request_to_gunicorn_once_it_has_read_it_whole(compose):
    location = nginx_directives("/")
    (target,) = location["proxy_pass"]
    if target.startswith("$"):
        (target,) = [value.split()[1] for value in location["set"] if value.split()[0] == target]
    bind = option_value(command_words(compose["services"]["web"]), "--bind", "-b")
    assert target == f"http://web:{bind.rsplit(':', 1)[1]}"
    assert location["proxy_request_buffering"] == ["on"] and location["proxy_buffering"] == ["on"]
    everywhere = nginx_directives()
    assert nginx_seconds(everywhere["client_header_timeout"][0]) <= 30
    assert nginx_seconds(everywhere["client_body_timeout"][0]) <= 60
    # gunicorn's own timeout answers a slow request before nginx gives up on it.
    gunicorn_timeout = int(option_value(command_words(compose["services"]["web"]), "--timeout", "-t"))
    assert nginx_seconds(location["proxy_read_timeout"][0]) > gunicorn_timeout


def test_the_proxy_admits_the_largest_upload_and_no_more():
    from projects.datasets.loading import DEFAULT_MAX_BYTES

    limit = nginx_bytes(nginx_directives()["client_max_body_size"][0])
    assert DEFAULT_MAX_BYTES < limit <= DEFAULT_MAX_BYTES + 16 * 1024**2  # the file and the rest of its form


def test_the_proxy_forwards_what_the_portal_reads(compose):
    headers = dict(value.split(None, 1) for value in nginx_directives("/")["proxy_set_header"])
    assert headers["Host"] == "$http_host"  # with its port: ALLOWED_HOSTS and CSRF's origin check compare it
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"  # appended: read from the right
    assert settings.SECURE_PROXY_SSL_HEADER[0] == "HTTP_X_FORWARDED_PROTO"
    assert headers["X-Forwarded-Proto"].startswith("$")


def test_the_portal_believes_the_proxy_and_no_one_else(compose, rf, settings):
    from mtm.client_address import client_address
    from mtm.env import parse_networks

    web = compose["services"]["web"]["environment"]
    proxy = compose["services"]["proxy"]["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    settings.MTM_TRUSTED_PROXIES = parse_networks("MTM_TRUSTED_PROXIES", web["MTM_TRUSTED_PROXIES"])
    assert ipaddress.ip_address(proxy) in ipaddress.ip_network(subnet)
    # What nginx sends for a member at 203.0.113.7 who wrote a forged X-Forwarded-For of their own.
    through_proxy = rf.get("/", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="10.0.0.1, 203.0.113.7")
    assert client_address(through_proxy) == "203.0.113.7"
    # Another container on the network (the gateway, a worker) is not the proxy: its header is not read.
    gateway = str(next(ipaddress.ip_network(subnet).hosts()))
    assert client_address(rf.get("/", REMOTE_ADDR=gateway, HTTP_X_FORWARDED_FOR="203.0.113.7")) == gateway


def test_the_proxy_serves_the_static_files_web_collects(compose):
    web, proxy = compose["services"]["web"], compose["services"]["proxy"]
    words = command_words(web)
    assert "collectstatic" in words and words.index("collectstatic") < words.index("gunicorn")
    web_mounts = {source: target for source, target in (volume.split(":")[:2] for volume in web["volumes"])}
    proxy_mounts = {source: target for source, target in (volume.split(":")[:2] for volume in proxy["volumes"])}
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    workdir = PurePosixPath(re.search(r"^WORKDIR (\S+)$", dockerfile, re.MULTILINE).group(1))
    assert "MTM_VAR_DIR" not in web["environment"]  # so the image's var/ is the one in its working directory
    static_root = workdir / "var" / settings.STATIC_ROOT.relative_to(settings.VAR_DIR)
    (volume,) = [source for source, target in web_mounts.items() if PurePosixPath(target) == static_root]
    assert volume in compose["volumes"]
    (alias,) = nginx_directives(f"/{settings.STATIC_URL.strip('/')}/")["alias"]
    assert PurePosixPath(alias) == PurePosixPath(proxy_mounts[volume])


def test_the_image_runs_gunicorn_as_compose_does(compose):
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    command = re.search(r"^CMD (\[.*?\])$", dockerfile.replace("\\\n", ""), re.MULTILINE | re.DOTALL).group(1)
    words = command_words(compose["services"]["web"])
    assert json.loads(command) == words[words.index("gunicorn") :]
