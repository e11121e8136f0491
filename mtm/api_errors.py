"""The API's error bodies and exception handlers: every failure is JSON with a code a script can branch on.

Body: {"detail": "<first message>", "errors": [{"code", "message", "hint"}, ...]} — the same error objects the
resolver and the checks return, so a 422 for a bad model name reads like a 200 with valid=false.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja.errors import AuthenticationError, AuthorizationError, HttpError, ValidationError
from ninja.parser import Parser

if TYPE_CHECKING:
    from ninja import NinjaAPI

logger = logging.getLogger("mtm.api")

DOCS_HINT = "See the request and response schemas at /api/v1/docs."
AUTH_HINT = (
    "Send 'Authorization: Bearer <token>' (create a token on the portal's API tokens page, /tokens/, or staff can "
    "run `python manage.py create_api_token USERNAME`), or log in to the portal and call the API from the same "
    "browser session."
)


def error_object(code: str, message: str, hint: str = "") -> dict[str, str]:
    return {"code": code, "message": message, "hint": hint}


def error_body(errors: list[dict[str, str]], detail: str | None = None) -> dict[str, Any]:
    return {"detail": detail or (errors[0]["message"] if errors else "Request failed."), "errors": errors}


class ApiError(Exception):
    """Raise from a view to answer `status` with these error objects (dicts or Problems)."""

    def __init__(self, status: int, errors: Iterable[Any], detail: str | None = None) -> None:
        self.status = status
        self.errors = [e if isinstance(e, dict) else e.model_dump() for e in errors]
        self.detail = detail
        super().__init__(self.errors[0]["message"] if self.errors else detail)

    @classmethod
    def single(cls, status: int, code: str, message: str, hint: str = "") -> ApiError:
        return cls(status, [error_object(code, message, hint)])


class TokenRejected(AuthenticationError):
    """A bearer token was sent but is unknown, revoked or belongs to a disabled account."""

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(401, message)
        self.code = code
        self.hint = hint


class NotAnObject(ValueError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"the body is a JSON {kind}, not an object")
        self.kind = kind


class NotUnicode(ValueError):
    """JSON may escape a lone UTF-16 surrogate ("\\ud800"); no database or file name can hold one."""


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise NotUnicode("a string holds a lone UTF-16 surrogate (an escape like \\ud800), which is not text")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


class JsonObjectParser(Parser):
    """JSON bodies must be objects of real text: anything else is refused here, so no view ever sees a list,
    a number or a string that cannot be stored."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        data = super().parse_body(request)
        if not isinstance(data, dict):
            kinds = {list: "array", str: "string", bool: "boolean", type(None): "null", int: "number", float: "number"}
            raise NotAnObject(kinds.get(type(data), type(data).__name__))
        _check_text(data)
        return data


def _location(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    # ninja puts the view's parameter name after the source ("body", "payload", "model_name"): drop it.
    if len(parts) > 1 and parts[0] == "body":
        parts = [parts[0], *parts[2:]]
    return ".".join(parts)


def _validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    errors = []
    for item in exc.errors:
        where = _location(item.get("loc", ()))
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        errors.append(error_object("invalid_request", f"{where}: {message}.", DOCS_HINT))
    return errors or [error_object("invalid_request", "The request is not valid.", DOCS_HINT)]


def install_error_handlers(api: NinjaAPI) -> None:
    def respond(request: HttpRequest, status: int, errors: list[dict[str, str]], detail: str | None = None):
        response = api.create_response(request, error_body(errors, detail), status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    @api.exception_handler(ApiError)
    def on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        return respond(request, exc.status, exc.errors, exc.detail)

    @api.exception_handler(ValidationError)
    def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        errors = _validation_errors(exc)
        detail = errors[0]["message"] if len(errors) == 1 else f"{len(errors)} problems with the request."
        return respond(request, 422, errors, detail)

    @api.exception_handler(AuthenticationError)
    def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        if isinstance(exc, TokenRejected):
            return respond(request, 401, [error_object(exc.code, exc.message, exc.hint)])
        return respond(request, 401, [error_object("not_authenticated", "Authentication required.", AUTH_HINT)])

    @api.exception_handler(AuthorizationError)
    def on_authorization_error(request: HttpRequest, exc: AuthorizationError) -> HttpResponse:
        message = exc.message if exc.message != "Forbidden" else "You are not allowed to do this."
        return respond(request, 403, [error_object("permission_denied", message, "Ask a staff member.")])

    @api.exception_handler(HttpError)
    def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400 and str(exc).startswith("Cannot parse request body"):
            cause = exc.__cause__
            if isinstance(cause, NotAnObject):
                message = f"The request body must be a JSON object, not a JSON {cause.kind}."
            else:
                message = f"The request body is not valid JSON: {cause or 'it could not be parsed'}."
            hint = 'Send a JSON object with Content-Type: application/json, e.g. {"model_name": "org/name"}.'
            return respond(request, 422, [error_object("invalid_json", message, hint)])
        if exc.status_code == 403 and "CSRF" in str(exc):
            hint = (
                "Browser sessions must send the csrftoken cookie's value in an X-CSRFToken header for "
                "POST, PATCH and DELETE; scripts should use a bearer token instead."
            )
            return respond(request, 403, [error_object("csrf_failed", "CSRF check failed.", hint)])
        code = {400: "invalid_request", 403: "permission_denied", 404: "not_found", 429: "throttled"}
        return respond(request, exc.status_code, [error_object(code.get(exc.status_code, "http_error"), str(exc))])

    @api.exception_handler(Http404)
    def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        message = f"Nothing found at {request.path}."
        return respond(request, 404, [error_object("not_found", message, DOCS_HINT)])

    @api.exception_handler(Exception)
    def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        if isinstance(exc, RequestDataTooBig):
            hint = "Send a smaller body; files go through the upload endpoints."
            return respond(request, 413, [error_object("request_too_large", "The request body is too large.", hint)])
        if isinstance(exc, SuspiciousOperation):
            message = f"Bad request: {str(exc).rstrip('.')}."  # Django's own messages end in a period
            return respond(request, 400, [error_object("invalid_request", message, DOCS_HINT)])
        if isinstance(exc, MultiPartParserError):
            hint = "Send files as multipart/form-data with a boundary, e.g. curl -F file=@train.jsonl URL."
            return respond(
                request, 422, [error_object("invalid_multipart", f"The multipart body is malformed: {exc}.", hint)]
            )
        logger.exception("API request %s %s failed", request.method, request.path)
        message = "The server failed to answer this request; the error is in its log."
        return respond(request, 500, [error_object("server_error", message, "Try again; if it persists, tell staff.")])
