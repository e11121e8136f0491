"""Access: the API tokens page (create once, list, revoke, end to end with the API), the staff audit page,
sign-in throttling on both password forms, and CSRF on every form and HTMX request."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from mtm import throttle
from mtm.models import ApiToken, AuditEvent, SignInThrottle
from tests.api_client import call, codes
from tests.clients import secure_client

pytestmark = pytest.mark.django_db

TOKENS = "/tokens/"
AUDIT = "/audit/"
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
PASSWORD = "a-long-pass-1234"
THROTTLED = "Too many failed sign-in attempts"


@pytest.fixture
def member(django_user_model):
    return django_user_model.objects.create_user("member", password=PASSWORD)


@pytest.fixture
def other(django_user_model):
    return django_user_model.objects.create_user("other", password=PASSWORD)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("boss", password=PASSWORD)


def text(response) -> str:
    return response.content.decode()


def create_token(client, name: str = "laptop") -> str:
    resp = client.post(TOKENS, {"name": name})
    assert resp.status_code == 201, text(resp)
    match = re.search(r'id="new-token-value"[^>]*value="(mtm_[^"]+)"', text(resp))
    assert match, "the new token is not on the page"
    return match.group(1)


# --- API tokens page ------------------------------------------------------------------------------------------


def test_tokens_page_needs_login():
    resp = secure_client().get(TOKENS)
    assert resp.status_code == 302 and resp["Location"].startswith(f"{LOGIN}?next=")


def test_the_nav_offers_tokens_to_everyone_and_audit_to_staff(member, staff):
    member_page = text(secure_client(member).get(TOKENS))
    assert f'<a href="{TOKENS}" aria-current="page">API tokens</a>' in member_page
    assert f'href="{AUDIT}"' not in member_page
    assert f'<a href="{AUDIT}">Audit</a>' in text(secure_client(staff).get("/"))


def test_tokens_page_lists_only_the_persons_own_tokens(member, other):
    mine, _ = ApiToken.issue(member, "my laptop")
    revoked, _ = ApiToken.issue(member, "old script")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    theirs, _ = ApiToken.issue(other, "their laptop")
    page = text(secure_client(member).get(TOKENS))
    assert "my laptop" in page and f"{mine.prefix}…" in page and "never" in page
    assert "old script" in page and "revoked" in page
    assert "their laptop" not in page and theirs.prefix not in page
    assert page.count("Revoke</button>") == 1  # only the active token can be revoked


def test_creating_a_token_shows_it_once_with_a_curl_example(member):
    client = secure_client(member)
    resp = client.post(TOKENS, {"name": "laptop"})
    assert resp.status_code == 201
    assert "no-store" in resp["Cache-Control"]
    raw = re.search(r'value="(mtm_[^"]+)"', text(resp)).group(1)
    token = ApiToken.objects.get(user=member)
    assert token.name == "laptop" and raw.startswith(token.prefix) and token.token_hash != raw
    assert "shown only this once" in text(resp)
    example = f'curl -H "Authorization: Bearer {raw}" https://testserver/api/v1/projects/models/available'
    assert example in text(resp)
    assert raw not in text(client.get(TOKENS))  # shown once: the list shows the prefix only
    event = AuditEvent.objects.get(action="api_token.create")
    assert (event.actor, event.object_id, event.via, event.remote_addr) == (member, str(token.pk), "web", "127.0.0.1")
    assert event.changes == {"name": [None, "laptop"]}


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_token_needs_a_sensible_name(member, name):
    resp = secure_client(member).post(TOKENS, {"name": name})
    assert resp.status_code == 400
    assert ("Give the token a name" in text(resp)) or ("at most 100 characters" in text(resp))
    assert not ApiToken.objects.exists()


def test_a_token_from_the_page_works_on_the_api_until_revoked_on_the_page(member, hf_cache):
    client = secure_client(member)
    raw = create_token(client)
    api = secure_client()
    resp = call(api, "get", "/projects/models/available", token=raw)
    assert resp.status_code == 200 and resp.json()["count"] == 0
    token = ApiToken.objects.get(user=member)
    assert token.last_used_at is not None
    assert "never" not in text(client.get(TOKENS))

    resp = client.post(f"{TOKENS}{token.pk}/revoke/", follow=True)
    assert resp.status_code == 200
    assert f"Revoked the token {token.prefix}… “laptop”" in text(resp)
    resp = call(api, "get", "/projects/models/available", token=raw)
    assert resp.status_code == 401 and codes(resp.json()["errors"]) == ["token_revoked"]
    event = AuditEvent.objects.get(action="api_token.revoke")
    assert event.actor == member and event.via == "web" and event.changes["revoked_at"][0] is None


def test_revoking_twice_says_so_and_is_audited_once(member):
    client = secure_client(member)
    token, _ = ApiToken.issue(member, "laptop")
    client.post(f"{TOKENS}{token.pk}/revoke/")
    first = ApiToken.objects.get(pk=token.pk).revoked_at
    resp = client.post(f"{TOKENS}{token.pk}/revoke/", follow=True)
    assert "was already revoked" in text(resp)
    assert ApiToken.objects.get(pk=token.pk).revoked_at == first
    assert AuditEvent.objects.filter(action="api_token.revoke").count() == 1


def test_nobody_revokes_another_persons_token_from_the_page(member, other, staff):
    theirs, _ = ApiToken.issue(other, "their laptop")
    for person in (member, staff):
        resp = secure_client(person).post(f"{TOKENS}{theirs.pk}/revoke/")
        assert resp.status_code == 404
        assert f"You have no API token #{theirs.pk}" in text(resp)
    assert ApiToken.objects.get(pk=theirs.pk).revoked_at is None
    assert not AuditEvent.objects.filter(action="api_token.revoke").exists()


def test_revoke_is_post_only(member):
    token, _ = ApiToken.issue(member, "laptop")
    assert secure_client(member).get(f"{TOKENS}{token.pk}/revoke/").status_code == 405
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_staff_revoke_anyones_token_from_the_admin(member, staff):
    token, _ = ApiToken.issue(member, "laptop")
    resp = secure_client(staff).post(
        "/admin/mtm/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )
    assert resp.status_code == 200 and "Revoked 1 token." in text(resp)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert AuditEvent.objects.get(action="api_token.revoke").via == "admin"


# --- Audit page -----------------------------------------------------------------------------------------------


def event(actor, action: str, object_type: str = "models_registry.modeloverride", **fields) -> AuditEvent:
    return AuditEvent.objects.create(actor=actor, action=action, object_type=object_type, **fields)


def test_audit_page_is_staff_only(member):
    assert secure_client().get(AUDIT)["Location"].startswith(f"{LOGIN}?next=")
    resp = secure_client(member).get(AUDIT)
    assert resp.status_code == 403 and "Only staff can see the audit log." in text(resp)


def test_audit_page_shows_who_did_what_when_from_where(member, staff):
    now = timezone.now()
    event(member, "override.create", object_id="7", object_repr="org/model → /m", at=now - timedelta(hours=1))
    event(
        staff,
        "settings.update",
        "models_registry.portalsettings",
        object_repr="Portal settings",
        changes={"allowed_output_roots": [["/a"], ["/b", "/c"]]},
        remote_addr="10.1.2.3",
        via="api",
        at=now,
    )
    page = text(secure_client(staff).get(AUDIT))
    table = page[page.index("<tbody") :]
    assert table.index("settings.update") < table.index("override.create")  # newest first
    assert "10.1.2.3" in page and ">api<" in page and "org/model → /m" in page and "#7" in page
    assert "{&quot;allowed_output_roots&quot;:[[&quot;/a&quot;],[&quot;/b&quot;,&quot;/c&quot;]]}" in page
    assert "<td>member</td>" in page and "<td>boss</td>" in page


def rows(response) -> int:
    return text(response).count("<time datetime=")


def test_audit_filters_by_action_object_type_and_actor(member, staff):
    event(member, "override.create")
    event(member, "run.start", "projects.trainingrun")
    event(staff, "run.cancel", "projects.trainingrun")
    event(None, "login.failed", "mtm.loginattempt")
    client = secure_client(staff)
    assert rows(client.get(AUDIT)) == 4
    assert rows(client.get(AUDIT, {"action": "run.start"})) == 1
    assert rows(client.get(AUDIT, {"object_type": "projects.trainingrun"})) == 2
    assert rows(client.get(AUDIT, {"actor": "member"})) == 2
    assert rows(client.get(AUDIT, {"actor": "member", "object_type": "projects.trainingrun"})) == 1
    assert rows(client.get(AUDIT, {"actor": "-"})) == 1
    resp = client.get(AUDIT, {"actor": "nobody-like-this", "action": "x" * 5000})
    assert resp.status_code == 200 and rows(resp) == 0 and "No event matches these filters." in text(resp)
    page = text(client.get(AUDIT))
    for option in ("run.start", "projects.trainingrun", 'value="member"', 'value="boss"'):
        assert option in page


def test_audit_pages_of_fifty_keep_the_filters(staff):
    AuditEvent.objects.bulk_create(
        AuditEvent(actor=staff, action="run.start", object_type="projects.trainingrun", object_id=str(i))
        for i in range(120)
    )
    event(staff, "override.create")
    client = secure_client(staff)
    first = client.get(AUDIT, {"action": "run.start"})
    assert rows(first) == 50 and "Page 1 of 3 (120 events)" in text(first)
    assert "?action=run.start&amp;page=2" in text(first)
    assert rows(client.get(AUDIT, {"action": "run.start", "page": 3})) == 20
    for bad in ("0", "-1", "abc", "99999"):
        assert client.get(AUDIT, {"page": bad}).status_code == 200


def test_audit_filter_swaps_only_the_results_for_htmx(staff):
    event(staff, "override.create")
    resp = secure_client(staff).get(AUDIT, {"action": "override.create"}, HTTP_HX_REQUEST="true")
    assert resp.status_code == 200 and "HX-Request" in resp["Vary"]
    assert "<html" not in text(resp) and rows(resp) == 1 and "<select" not in text(resp)


# --- Sign-in throttling ---------------------------------------------------------------------------------------


def sign_in(client, username: str, password: str, url: str = LOGIN, addr: str = "127.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=addr)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_five_failures_make_the_next_try_wait_before_the_password_is_checked(member):
    client = secure_client()
    for _ in range(django_settings.MTM_LOGIN_MAX_FAILURES):
        resp = sign_in(client, "member", "wrong")
        assert resp.status_code == 200 and "Please enter a correct username and password" in text(resp)
    resp = sign_in(client, "member", PASSWORD)
    assert resp.status_code == 429 and not signed_in(client)
    assert THROTTLED in text(resp) and "Wait 30 seconds before trying again" in text(resp)
    # Refusals are not tries: they neither lengthen the wait nor count.
    counted = SignInThrottle.objects.values_list("account", "failures")
    assert sorted(counted) == [("", 5), ("member", 5)]
    # Another account from another address is unaffected.
    other_person = type(member).objects.create_user("other", password=PASSWORD)
    assert sign_in(secure_client(), other_person.username, PASSWORD, addr="10.0.0.9").status_code == 302


def test_the_lockout_counts_case_variants_of_one_account(member):
    client = secure_client()
    for username in ("member", "MEMBER", " Member", "mEmber", "member "):
        sign_in(client, username, "wrong", addr="10.0.0.1")
    assert THROTTLED in text(sign_in(client, "member", PASSWORD, addr="10.0.0.1"))


def test_a_success_clears_the_accounts_failures(member):
    client = secure_client()
    for _ in range(4):
        sign_in(client, "member", "wrong")
    assert sign_in(client, "member", PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        sign_in(client, "member", "wrong")
    assert sign_in(client, "member", PASSWORD).status_code == 302 and signed_in(client)


def test_one_address_guessing_many_accounts_is_locked_out(settings, member):
    settings.MTM_LOGIN_MAX_FAILURES_PER_ADDRESS = 3
    client = secure_client()
    for username in ("alice", "bob", "carol"):
        sign_in(client, username, "guess", addr="203.0.113.5")
    resp = sign_in(client, "member", PASSWORD, addr="203.0.113.5")
    assert resp.status_code == 429 and THROTTLED in text(resp)
    # Signing in to one's own account from that address does not reset the address's count.
    assert sign_in(secure_client(), "member", PASSWORD, addr="198.51.100.7").status_code == 302
    assert sign_in(client, "member", PASSWORD, addr="203.0.113.5").status_code == 429


def test_the_admin_login_is_throttled_too(staff):
    client = secure_client()
    for _ in range(5):
        assert sign_in(client, "boss", "wrong", url=ADMIN_LOGIN).status_code == 200
    resp = sign_in(client, "boss", PASSWORD, url=ADMIN_LOGIN)
    assert THROTTLED in text(resp) and not signed_in(client)
    assert AuditEvent.objects.filter(action="login.failed", via="admin").count() == 5


def change_password(client, old: str, url: str = "/accounts/password/", addr: str = "127.0.0.1"):
    new = "a-newer-pass-5678"
    return client.post(url, {"old_password": old, "new_password1": new, "new_password2": new}, REMOTE_ADDR=addr)


@pytest.mark.parametrize("url", ["/accounts/password/", "/admin/password_change/"], ids=["portal", "admin"])
def test_the_password_change_form_is_throttled_like_sign_in(staff, url):
    client = secure_client(staff)
    for _ in range(django_settings.MTM_LOGIN_MAX_FAILURES):
        resp = change_password(client, "wrong", url=url)
        assert resp.status_code == 200 and "Your old password was entered incorrectly" in text(resp)
    resp = change_password(client, PASSWORD, url=url)
    assert resp.status_code == 429 and THROTTLED in text(resp)
    staff.refresh_from_db()
    assert staff.check_password(PASSWORD)  # the right old password was refused unchecked: nothing changed
    # The guesses count against the account from that address at the sign-in door too, and are audited.
    assert sign_in(secure_client(), "boss", PASSWORD).status_code == 429
    assert sign_in(secure_client(), "boss", PASSWORD, addr="10.0.0.9").status_code == 302
    assert AuditEvent.objects.filter(action="password_change.failed", actor=staff).count() == 5


def test_a_right_old_password_changes_it_and_clears_the_failures(member):
    client = secure_client(member)
    for _ in range(4):
        change_password(client, "wrong")
    assert change_password(client, PASSWORD).status_code == 302
    member.refresh_from_db()
    assert member.check_password("a-newer-pass-5678")
    assert throttle.refusal("member", "127.0.0.1") is None
    assert SignInThrottle.objects.get(account="member").failures == 0


def test_one_address_guessing_through_the_change_form_is_locked_out(settings, member, other):
    settings.MTM_LOGIN_MAX_FAILURES_PER_ADDRESS = 3
    change_password(secure_client(member), "wrong", addr="203.0.113.5")
    for _ in range(2):
        change_password(secure_client(other), "wrong", addr="203.0.113.5")
    resp = change_password(secure_client(member), PASSWORD, addr="203.0.113.5")
    assert resp.status_code == 429 and THROTTLED in text(resp)


def test_sign_ins_are_audited_with_their_address(member):
    client = secure_client()
    sign_in(client, "member", "wrong", addr="192.0.2.44")
    sign_in(client, "member", PASSWORD, addr="192.0.2.44")
    failed = AuditEvent.objects.get(action="login.failed")
    assert failed.actor is None and failed.remote_addr == "192.0.2.44" and "'member'" in failed.object_repr
    succeeded = AuditEvent.objects.get(action="login.succeeded")
    assert succeeded.actor == member and succeeded.remote_addr == "192.0.2.44" and succeeded.via == "web"


# --- CSRF -----------------------------------------------------------------------------------------------------


class FormScanner(HTMLParser):
    """The forms of a page: their method and whether a csrfmiddlewaretoken input sits inside."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self._open: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self._open = {
                "method": (values.get("method") or "get").lower(),
                "action": values.get("action"),
                "csrf": False,
            }
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and values.get("name") == "csrfmiddlewaretoken":
            self._open["csrf"] = bool(values.get("value"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def post_forms(html: str) -> list[dict]:
    scanner = FormScanner()
    scanner.feed(html)
    return [form for form in scanner.forms if form["method"] == "post"]


def template_dirs() -> list[Path]:
    base = Path(django_settings.BASE_DIR)
    return [base / "templates", *(p for p in base.glob("*/templates") if ".venv" not in p.parts)]


def test_every_post_form_in_the_templates_has_a_csrf_token():
    checked = 0
    form_re = re.compile(r"<form\b[^>]*>.*?</form>", re.S | re.I)
    for directory in template_dirs():
        for template in directory.rglob("*.html"):
            for form in form_re.findall(template.read_text()):
                opening = form[: form.index(">") + 1]
                if re.search(r"""method\s*=\s*["']?post""", opening, re.I):
                    checked += 1
                    assert "{% csrf_token %}" in form, f"{template}: a POST form without {{% csrf_token %}}"
    assert checked >= 5  # login, logout, settings, password change, tokens create and revoke


def parameterless_pages() -> list[str]:
    """Every URL of the portal that takes no argument (the admin and the JSON API are left to their own tests)."""
    found: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            route = str(entry.pattern)
            if isinstance(entry, URLResolver):
                if route not in ("admin/", "api/v1/"):
                    walk(entry.url_patterns, prefix + route)
            elif isinstance(entry, URLPattern) and "<" not in route and not route.startswith("^"):
                found.append("/" + prefix + route)

    walk(get_resolver().url_patterns, "")
    return sorted(set(found))


def test_every_page_renders_its_post_forms_with_a_csrf_token(staff, member, hf_cache):
    token, _ = ApiToken.issue(staff, "laptop")
    # Errors are answered, not raised, so one broken page does not hide the others: all are named below.
    client = secure_client(staff, raise_request_exception=False)
    pages = {url: client.get(url) for url in parameterless_pages()}
    pages["tokens after create"] = client.post(TOKENS, {"name": "second"})
    pages[LOGIN] = secure_client().get(LOGIN)  # as a visitor: signed in, it redirects
    pages[ADMIN_LOGIN] = secure_client().get(ADMIN_LOGIN)
    # A page that fails cannot show whether its forms carry the token: no page may answer a server error.
    assert {url: resp.status_code for url, resp in pages.items() if resp.status_code >= 500} == {}
    for must in (LOGIN, TOKENS, AUDIT, "/settings/", "/accounts/password/", "/", "/models/"):
        assert pages[must].status_code == 200, must
    rendered = 0
    for url, resp in pages.items():
        if resp.status_code not in (200, 201) or "text/html" not in resp["Content-Type"]:
            continue  # a redirect, a refusal of GET (405) or a JSON answer: no form to read
        html = text(resp)
        for form in post_forms(html):
            rendered += 1
            assert form["csrf"], f"{url}: the POST form to {form['action']} has no csrfmiddlewaretoken"
        if "/htmx-" in html:  # a page that loads htmx sends the token with every htmx request
            assert re.search(r"""<body hx-headers='\{"x-csrftoken": "[A-Za-z0-9]{64}"\}'>""", html), url
    # Logout on every page, login, settings, password change, token create and revoke, admin login at least.
    assert rendered >= 10


# Over HTTPS Django also checks where a POST comes from; a browser sends Origin, so these requests do too.
SAME_ORIGIN = {"HTTP_ORIGIN": "https://testserver"}


def test_a_post_without_the_csrf_token_is_refused(member):
    client = secure_client(member, enforce_csrf_checks=True, **SAME_ORIGIN)
    token, _ = ApiToken.issue(member, "laptop")
    assert client.post(TOKENS, {"name": "forged"}).status_code == 403
    assert client.post(f"{TOKENS}{token.pk}/revoke/").status_code == 403
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None and ApiToken.objects.count() == 1
    page = text(client.get(TOKENS))
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post(TOKENS, {"name": "real", "csrfmiddlewaretoken": csrf}).status_code == 201


def test_htmx_requests_carry_the_token_from_the_body_header(staff):
    client = secure_client(staff, enforce_csrf_checks=True, **SAME_ORIGIN)
    page = text(client.get("/settings/"))
    header_token = re.search(r'"x-csrftoken": "([^"]+)"', page).group(1)
    url = "/settings/validate-path/"
    assert client.post(url, {"allowed_output_roots": "/data"}, HTTP_HX_REQUEST="true").status_code == 403
    resp = client.post(url, {"allowed_output_roots": "/data"}, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=header_token)
    assert resp.status_code == 200 and "/data" in text(resp)


@pytest.mark.parametrize(
    ("url", "via"), [("/accounts/password/", "web"), ("/admin/password_change/", "admin")], ids=["portal", "admin"]
)
def test_a_successful_password_change_is_audited_without_the_hash(staff, url, via):
    old_hash = staff.password
    assert change_password(secure_client(staff), PASSWORD, url=url, addr="192.0.2.7").status_code == 302
    staff.refresh_from_db()
    event = AuditEvent.objects.get(action="password_change.succeeded")
    assert (event.actor, event.object_id, event.via, event.remote_addr) == (staff, str(staff.pk), via, "192.0.2.7")
    assert event.changes == {"password": "changed"}
    assert old_hash not in str(event.changes) and staff.password not in str(event.changes)


def user_form(user, **fields) -> dict:
    """The admin's user change form as posted by a browser, with `fields` changed."""
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "groups": [],
        "user_permissions": [],
    }
    for flag in ("is_active", "is_staff", "is_superuser"):
        if getattr(user, flag):
            data[flag] = "on"
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def test_admin_edits_to_a_user_are_audited(staff, member):
    from django.contrib.auth.models import Group

    ops = Group.objects.create(name="ops")
    client = secure_client(staff)
    page = f"/admin/auth/user/{member.pk}/change/"
    resp = client.post(
        page, user_form(member, is_staff="on", is_superuser="on", groups=[ops.pk]), REMOTE_ADDR="192.0.2.8"
    )
    assert resp.status_code == 302, text(resp)
    event = AuditEvent.objects.get(action="user.update")
    assert (event.actor, event.object_id, event.via, event.remote_addr) == (staff, str(member.pk), "admin", "192.0.2.8")
    assert event.changes == {"is_staff": [False, True], "is_superuser": [False, True], "groups": [[], ["ops"]]}

    member.refresh_from_db()
    assert client.post(page, user_form(member, is_active=None, groups=[ops.pk])).status_code == 302
    assert AuditEvent.objects.filter(action="user.update").latest("pk").changes == {"is_active": [True, False]}


def test_an_admin_password_reset_records_that_it_changed_never_the_hash(staff, member):
    new = "another-pass-9876"
    form = {"usable_password": "true", "password1": new, "password2": new}
    resp = secure_client(staff).post(f"/admin/auth/user/{member.pk}/password/", form)
    assert resp.status_code == 302, text(resp)
    member.refresh_from_db()
    assert member.check_password(new)
    event = AuditEvent.objects.get(action="user.password_set")
    assert (event.actor, event.object_id, event.via) == (staff, str(member.pk), "admin")
    assert event.changes == {"password": "changed"} and member.password not in str(event.changes)


def test_admin_creation_and_deletion_of_a_user_are_audited(staff):
    client = secure_client(staff)
    new = "a-third-pass-5555"
    form = {"username": "newbie", "usable_password": "true", "password1": new, "password2": new}
    assert client.post("/admin/auth/user/add/", form).status_code == 302
    created = AuditEvent.objects.get(action="user.create")
    assert created.actor == staff and created.changes["username"] == [None, "newbie"]
    assert created.changes["password"] == "changed" and "md5" not in str(created.changes)
    newbie = created.object_id
    assert client.post(f"/admin/auth/user/{newbie}/delete/", {"post": "yes"}).status_code == 302
    deleted = AuditEvent.objects.get(action="user.delete")
    assert (deleted.actor, deleted.object_id, deleted.via) == (staff, newbie, "admin")
    assert deleted.changes["username"] == ["newbie", None] and "password" not in deleted.changes
