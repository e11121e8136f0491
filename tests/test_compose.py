"""docker-compose.yml and the Dockerfile agree with the code (there is no Docker engine here: read, don't run)."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parent.parent
APP_SERVICES = ("web", "worker", "beat", "trainer-gpu0", "trainer-gpu1", "playground-gpu0")
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
    assert set(compose["services"]) >= {"web", "worker", *TRAINERS, *PLAYGROUND, "redis", "postgres"}


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
    for name in ("worker", *TRAINERS, *PLAYGROUND):
        queues = consumed_queues(compose["services"][name])
        assert queues <= known, f"{name} consumes {queues - known}, which no task is routed to"
        consumed |= queues
    assert consumed == known
    words = command_words(compose["services"]["worker"])
    assert words[:1] == ["celery"] and "worker" in words and option_value(words, "-A", "--app") == "mtm"


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
    consumed = set().union(*(consumed_queues(compose["services"][name]) for name in ("worker", *TRAINERS, *PLAYGROUND)))
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
