"""Production settings: `manage.py check --deploy` is clean with DEBUG off, and the responses carry what it checks for."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import Client

from tests.clients import secure_client

# Operator switches that would weaken the hardening; the checks below start from none of them set.
HARDENING_OVERRIDES = (
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "MTM_PLAIN_HTTP",
    "DJANGO_SETTINGS_MODULE",
)


def check_deploy(tmp_path, unset: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in HARDENING_OVERRIDES + unset}
    full_env.update(MTM_VAR_DIR=str(tmp_path / "var"), ALLOWED_HOSTS="example.org", **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = check_deploy(tmp_path, DEBUG="0", SECRET_KEY=secrets.token_urlsafe(64))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNINGS" not in output and "System check identified no issues" in output


def test_check_deploy_is_clean_with_the_generated_secret_key(tmp_path):
    # No SECRET_KEY in the environment: the one written beside the database is long and random enough.
    result = check_deploy(tmp_path, unset=("SECRET_KEY",), DEBUG="0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len((tmp_path / "var" / "secret_key").read_text().strip()) >= 50


@pytest.mark.parametrize(
    ("env", "flagged"),
    [
        ({"DEBUG": "1"}, "security.W018"),  # DEBUG on also drops HSTS, secure cookies and the HTTPS redirect
        ({"DEBUG": "0", "SESSION_COOKIE_SECURE": "0"}, "security.W012"),
        ({"DEBUG": "0", "SECURE_HSTS_SECONDS": "0"}, "security.W004"),
        ({"DEBUG": "0", "MTM_PLAIN_HTTP": "1"}, "security.W008"),  # make run's plain HTTP: no HTTPS redirect
    ],
)
def test_check_deploy_flags_unsafe_settings(tmp_path, env, flagged):
    result = check_deploy(tmp_path, SECRET_KEY=secrets.token_urlsafe(64), **env)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "WARNINGS" in output and flagged in output, output


def test_check_deploy_flags_a_weak_secret_key(tmp_path):
    result = check_deploy(tmp_path, DEBUG="0", SECRET_KEY="changeme")
    assert result.returncode != 0 and "security.W009" in result.stdout + result.stderr


@pytest.mark.django_db
def test_responses_carry_the_hardening_headers_and_secure_cookies(django_user_model, settings):
    assert not settings.DEBUG  # the suite runs with the production defaults
    plain = Client().get("/accounts/login/")
    assert plain.status_code == 301 and plain["Location"].startswith("https://")

    client = secure_client()
    page = client.get("/accounts/login/")
    assert page["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert page["X-Frame-Options"] == "DENY" and page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == "same-origin" and page["Cross-Origin-Opener-Policy"] == "same-origin"
    assert page.cookies[settings.CSRF_COOKIE_NAME]["secure"]

    django_user_model.objects.create_user("member", password="a-long-pass-1234")
    signed_in = client.post("/accounts/login/", {"username": "member", "password": "a-long-pass-1234"})
    session = signed_in.cookies[settings.SESSION_COOKIE_NAME]
    assert signed_in.status_code == 302 and session["secure"] and session["httponly"]
