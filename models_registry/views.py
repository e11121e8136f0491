"""Pages of the registry: the model list, a model's resolution, the model-name check and the Directory Settings."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseStopPolling

from models_registry import lookup
from models_registry.chat_template_source import chat_template_source
from models_registry.deep_listing import still_checking
from models_registry.deep_state import DeepState, deep_state, with_deep_verdict
from models_registry.demo import DEMO_MODEL_NAME, DEMO_NOTE, is_demo_model
from models_registry.forms import ModelCheckForm, PortalSettingsForm
from models_registry.list_rows import model_rows
from models_registry.models import PortalSettings, PublishedModel
from models_registry.names import name_error
from models_registry.settings_checks import PathReport, check_cache_path, check_root, split_lines
from models_registry.settings_services import OTHER_SETTINGS_FIELDS, SETTINGS_FIELDS, SettingsRefused, update_settings
from models_registry.suggestions import similar_names
from models_registry.trainability import training_refusal
from models_registry.verdict_fill import ask_for_listed, listed_to_ask
from mtm.audit import Actor, Channel
from mtm.auth import require_staff_page
from mtm.htmx import HtmxHttpRequest, wants_partial
from mtm.request_limits import limited_view
from mtm.shared.problems import Problem
from projects.publishing.services import can_unpublish  # allowed back-import: tests/test_layers.py

VALID_FILTERS = {"true": True, "false": False}
MAX_QUERY_CHARS = 200
MAX_CHECKED_ROOTS = 20
SETTINGS_WHAT = "see or change the Directory Settings"
STATUS_FOR_ERROR = {"model_not_found": 404, "revision_not_found": 404, "invalid_revision": 400}


def _list_query(request: HtmxHttpRequest) -> dict[str, str]:
    """The list's filters as sent (also on the POST that asks for checks, in its query string)."""
    return {"q": request.GET.get("q", "")[:MAX_QUERY_CHARS], "valid": request.GET.get("valid", "")}


def _list_context(request: HtmxHttpRequest, *, just_asked: bool = False) -> dict:
    """What the Models page shows. `just_asked`: the answer to the POST that asked for checks, which never asks
    again by itself (were no worker reachable, the rows would otherwise ask on every swap)."""
    filters = _list_query(request)
    query, valid = filters["q"], VALID_FILTERS.get(filters["valid"])
    cache_dir, cache_source = lookup.current_cache_dir()
    _, models = lookup.available_models(query, valid)
    filtered = bool(query.strip()) or valid is not None
    cache_empty = not models and (not filtered or not lookup.available_models()[1])
    checking = still_checking(models)
    return {
        "rows": model_rows(models),
        "demo_model_name": DEMO_MODEL_NAME,
        "query": query,
        "valid": filters["valid"],
        "filtered": filtered,
        "cache_empty": cache_empty,
        "cache_dir": cache_dir,
        "cache_source": cache_source,
        "check_form": ModelCheckForm(),
        "checking": checking,
        # The rows ask (a POST on load) while fewer than a batch of the models they show are being checked.
        "to_ask": 0 if just_asked else len(listed_to_ask(models)),
        "list_url": f"{reverse('registry:models')}?{urlencode(filters)}",
        "ask_url": f"{reverse('registry:models-ask')}?{urlencode(filters)}",
    }


@require_http_methods(["GET", "HEAD"])
@login_required
@vary_on_headers("HX-Request")
def model_list(request: HtmxHttpRequest) -> HttpResponse:
    template = "models/list.html#model-rows" if wants_partial(request) else "models/list.html"
    return render(request, template, _list_context(request))


@require_http_methods(["POST"])
@login_required
@vary_on_headers("HX-Request")
def ask_list_checks(request: HtmxHttpRequest) -> HttpResponse:
    """The list, loaded, asks the workers for transformers' checks of the models it shows that none has checked or
    been asked about (keeping at most MTM_VERDICT_FILL_BATCH of them being checked), and answers with its rows,
    which then poll while any is being checked. Without htmx (the button), back to the list."""
    filters = _list_query(request)
    _, models = lookup.available_models(filters["q"], VALID_FILTERS.get(filters["valid"]))
    ask_for_listed(models)
    if not request.htmx:
        back = HttpResponseRedirect(f"{reverse('registry:models')}?{urlencode(filters)}")
        back.status_code = 303  # See Other: the browser GETs the list
        return back
    return render(request, "models/list.html#model-rows", _list_context(request, just_asked=True))


def _busy_page(request: HtmxHttpRequest, problem: Problem) -> HttpResponse:
    name = request.resolver_match.kwargs.get("name", "") if request.resolver_match else ""
    context = {"name": name, "name_problem": problem, "problem_title": "Too many checks at once"}
    return render(request, "models/detail.html", context)


@require_http_methods(["GET", "HEAD"])
@login_required
@limited_view(_busy_page)
def model_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    if problem := name_error(name):
        return render(request, "models/detail.html", {"name_problem": problem, "name": name}, status=400)
    revision = request.GET.get("revision", "").strip()[:256]
    instant = lookup.resolve_model(name, revision or None)
    deep = deep_state(instant)
    resolution = with_deep_verdict(instant, deep)
    status = max((STATUS_FOR_ERROR.get(e.code, 200) for e in resolution.errors), default=200)
    refusal = training_refusal(resolution) if resolution.valid else None
    context = {
        "name": name,
        "revision": revision,
        "resolution": resolution,
        "training_refusal": refusal,
        "deep": deep,
        "deep_url": _verdict_url(name, revision, "page"),
        "demo_note": DEMO_NOTE if is_demo_model(name) else "",
    }
    if resolution.path and not resolution.unread:
        context["chat_template"] = chat_template_source(resolution.path) or ""
    if resolution.source == "portal":
        rows = PublishedModel.objects.select_related("run__project__owner", "published_by")
        published = rows.filter(model_name=name).first()
        context["published"] = published
        context["can_unpublish"] = published is not None and can_unpublish(request.user, published)
    return render(request, "models/detail.html", context, status=status)


def _param(params, field: str) -> str:
    """`field` as sent, also when the form that holds it uses a prefix ("project-model_name")."""
    if field in params:
        return params[field]
    for key in params:
        if key.endswith(f"-{field}"):
            return params[key]
    return ""


def _verdict_url(name: str, revision: str, view: str) -> str:
    query = urlencode({"model_name": name, "revision": revision, "view": view})
    return f"{reverse('registry:verdict-status')}?{query}"


def _model_check(name: str, revision: str, *, ask: bool = False) -> dict:
    """What the model-name field's status says of `name`: the instant answer overridden by transformers' cached
    verdict, and that verdict's state (with `ask`, from a POST only, "checking" asks a worker for it)."""
    check: dict = {"name": name, "revision": revision}
    if not name:
        check["state"] = "empty"
    elif problem := name_error(name):
        check.update(state="error", errors=[problem])
    else:
        instant = lookup.resolve_model(name, revision or None)
        deep = deep_state(instant, ask=ask)
        resolution = with_deep_verdict(instant, deep)
        state = "error" if not resolution.valid else "warn" if resolution.warnings else "ok"
        check.update(state=state, resolution=resolution, errors=resolution.errors, warnings=resolution.warnings)
        check.update(deep=deep, deep_url=_verdict_url(name, revision, "field"))
        if any(problem.code == "model_not_found" for problem in resolution.errors):
            _, listed = lookup.available_models()
            check["suggestions"] = similar_names(name, (model.model_name for model in listed))
    return check


def _busy_field(request: HtmxHttpRequest, problem: Problem) -> HttpResponse:
    check = {"name": _param(request.GET, "model_name").strip()[:MAX_QUERY_CHARS], "state": "error", "errors": [problem]}
    return render(request, "models/_model_field.html#model-status", {"check": check})


@require_http_methods(["GET"])
@login_required
@limited_view(_busy_field)
def validate_field(request: HtmxHttpRequest) -> HttpResponse:
    """The status fragment of the model-name field: 200 for any input, the answer is in the fragment."""
    name = _param(request.GET, "model_name").strip()
    revision = _param(request.GET, "revision").strip()
    return render(request, "models/_model_field.html#model-status", {"check": _model_check(name, revision)})


def _still_checking(deep: DeepState | None) -> bool:
    return deep is not None and deep.state == "checking"


def _busy_poll(request: HtmxHttpRequest, problem: Problem) -> HttpResponse:
    """A poll beyond the cap answers what it polls as still checking, so the poll goes on (the field says why)."""
    name = request.GET.get("model_name", "").strip()[:MAX_QUERY_CHARS]
    revision = request.GET.get("revision", "").strip()[:256]
    checking = DeepState(state="checking")
    if request.GET.get("view") == "field":
        check = {"name": name, "revision": revision, "state": "error", "errors": [problem], "deep": checking}
        check["deep_url"] = _verdict_url(name, revision, "field")
        return render(request, "models/_model_field.html#model-status", {"check": check})
    context = {"name": name, "revision": revision, "deep": checking, "deep_url": _verdict_url(name, revision, "page")}
    return render(request, "models/detail.html#deep-verdict", context)


@require_http_methods(["GET", "POST"])
@login_required
@limited_view(_busy_poll)
def verdict_status(request: HtmxHttpRequest) -> HttpResponse:
    """The polled region that waits for transformers' verdict: the field's status (view=field) or the model page's
    verdict section. The poll is a POST, which asks a worker for the check once per snapshot (a GET only reads).
    200 while checking; 286 (htmx stops polling) once the verdict is cached, and on the page HX-Refresh too, since
    the verdict changes the page's badge and problems."""
    name = request.GET.get("model_name", "").strip()[:MAX_QUERY_CHARS]
    revision = request.GET.get("revision", "").strip()[:256]
    ask = request.method == "POST"
    if request.GET.get("view") == "field":
        check = _model_check(name, revision, ask=ask)
        response = render(request, "models/_model_field.html#model-status", {"check": check})
        return response if _still_checking(check.get("deep")) else HttpResponseStopPolling(response.content)
    if name_error(name):
        return HttpResponseStopPolling("")
    deep = deep_state(lookup.resolve_model(name, revision or None), ask=ask)
    context = {"name": name, "revision": revision, "deep": deep, "deep_url": _verdict_url(name, revision, "page")}
    response = render(request, "models/detail.html#deep-verdict", context)
    if _still_checking(deep):
        return response
    done = HttpResponseStopPolling(response.content)
    done["HX-Refresh"] = "true"
    return done


def _root_reports(lines: list[str], kind: str) -> tuple[list[PathReport], bool]:
    """Reports for the roots typed, or for the server's defaults when none is; and whether defaults are shown."""
    defaults = not lines
    if defaults:
        lines = settings.MTM_OUTPUT_ROOTS if kind == "output" else settings.MTM_DATASET_ROOTS
    return [check_root(line, kind) for line in lines[:MAX_CHECKED_ROOTS]], defaults


def _path_status(field: str, value: str) -> dict:
    if field == "model_cache_path":
        return {"field": field, "reports": [check_cache_path(value)], "defaults": False}
    kind = "output" if field == "allowed_output_roots" else "dataset"
    lines = split_lines(value)
    reports, defaults = _root_reports(lines, kind)
    return {"field": field, "reports": reports, "defaults": defaults, "more": max(0, len(lines) - MAX_CHECKED_ROOTS)}


def _add_inline_validation(form: PortalSettingsForm) -> None:
    url = reverse("registry:validate-path")
    for name in SETTINGS_FIELDS:
        form.fields[name].widget.attrs.update(
            {
                "hx-post": url,
                "hx-trigger": "input changed delay:500ms",
                "hx-params": name,
                "hx-target": f"#{name}-status",
                "hx-sync": "this:replace",
                "spellcheck": "false",
                "autocomplete": "off",
            }
        )


def _save(request: HtmxHttpRequest, form: PortalSettingsForm) -> dict | None:
    """The changes saved, or None (with the refusals on the form)."""
    try:
        return update_settings(form.cleaned_data, actor=Actor.of(request, Channel.PAGE))
    except SettingsRefused as refused:
        for problem in refused.problems:
            form.add_error(None, f"{problem.message} {problem.hint}".strip())
        return None


@require_http_methods(["GET", "POST"])
@login_required
def settings_page(request: HtmxHttpRequest) -> HttpResponse:
    require_staff_page(request, SETTINGS_WHAT)
    obj = PortalSettings.load()
    form = PortalSettingsForm(request.POST or None, instance=obj)
    changes = _save(request, form) if request.method == "POST" and form.is_valid() else None
    if changes is not None:
        if changes:
            labels = ", ".join(form.fields[name].label for name in changes)
            messages.success(request, f"Directory Settings saved. Changed: {labels}.")
        else:
            messages.info(request, "Nothing changed: the Directory Settings are as they were.")
        return redirect("registry:settings")
    _add_inline_validation(form)
    values = form.data if form.is_bound else {k: form.initial.get(k, "") for k in SETTINGS_FIELDS}
    cache_dir, cache_source = lookup.current_cache_dir()
    context = {
        "form": form,
        "cache_dir": cache_dir,
        "cache_source": cache_source,
        "rows": [(form[name], _path_status(name, values.get(name) or "")) for name in SETTINGS_FIELDS],
        "other_fields": [form[name] for name in OTHER_SETTINGS_FIELDS],
        "updated_by": obj.updated_by,
        "updated_at": obj.updated_at,
    }
    # A refused save answers 422, as the project form does, so scripts and tests can tell it from a plain view.
    return render(request, "settings/settings.html", context, status=422 if form.is_bound else 200)


@require_http_methods(["POST"])
@login_required
def validate_path(request: HtmxHttpRequest) -> HttpResponse:
    """The inline status of one Directory Settings field, as the person types it."""
    require_staff_page(request, SETTINGS_WHAT)
    field = next((name for name in SETTINGS_FIELDS if name in request.POST), None)
    if field is None:
        return HttpResponse("")
    return render(request, "settings/settings.html#path-status", {"s": _path_status(field, request.POST[field])})
