"""The JSON API of inference jobs under /api/: create, list, read and cancel one's jobs, and the
OpenAPI document that describes it (inference.openapi).

Every endpoint here and in inference.openai_views goes through `api_view`: a session or
`Authorization: Bearer <token>` with the `inference` scope, and every refusal in one JSON shape
(OpenAI's: {"error": {"message", "type", "code"}}) with X-Error-Code / X-Error-Message headers, so
that a script sees the reason. The services decide; these views only read and write JSON.
"""

from __future__ import annotations

import json
from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from datasets_app.tokens import TokenError, access_token_authenticate, bearer
from inference import formatting, services
from inference.errors import JobError
from inference.models import InferenceJob
from inference.openapi import openapi_document
from inference.params import params_validate
from portal.responses import error_headers

SCOPE = "inference"
LIST_LIMIT = 100
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          405: "invalid_request_error", 409: "conflict_error", 429: "rate_limit_error"}


def error_response(status: int, message: str, *, code: str, retry_after: int | None = None) -> JsonResponse:
    response = JsonResponse({"error": {"message": message, "type": _TYPES.get(status, "server_error"), "code": code}},
                            status=status)
    if retry_after is not None:
        response["Retry-After"] = str(max(1, int(retry_after)))
    return error_headers(response, code=code, message=message)


def _csrf_refusal(request) -> JsonResponse | None:
    # Only a call carrying a token is exempt from CSRF: a session call comes from a browser, where
    # another site's page could send it with the user's cookie.
    if CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {}) is None:
        return None
    return error_response(403, "This request came with your session cookie but without its CSRF token: send the "
                               "X-CSRFToken header from the page, or use an access token (Authorization: Bearer).",
                          code="csrf")


def _method_refusal(request, methods) -> JsonResponse:
    response = error_response(405, f"{request.method} is not allowed here: use {' or '.join(methods)}.", code="method_not_allowed")
    response["Allow"] = ", ".join(methods)
    return response


def api_view(*methods: str):
    """Authenticate (session or a token with the `inference` scope), check the method, and answer
    refusals (TokenError, JobError) as JSON errors."""

    def decorator(view):
        @csrf_exempt
        @never_cache
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                return _method_refusal(request, methods)
            request.access_token = None
            raw = bearer(request)
            if raw is not None:
                try:
                    token = access_token_authenticate(raw, scope=SCOPE, request=request)
                except TokenError as error:
                    return error_response(error.status, str(error), code=error.code)
                request.user, request.access_token = token.user, token
            elif not request.user.is_authenticated:
                return error_response(401, "Sign in, or send Authorization: Bearer <token> with an access token that has "
                                           f"the '{SCOPE}' scope (create one at {settings.PORTAL_BASE_URL}"
                                           f"{reverse('token_list')}).", code="unauthenticated")
            elif request.method not in ("GET", "HEAD", "OPTIONS") and (refusal := _csrf_refusal(request)) is not None:
                return refusal
            try:
                return view(request, *args, **kwargs)
            except JobError as error:
                return error_response(error.status, error.message, code=error.code, retry_after=error.retry_after)

        return wrapper

    return decorator


def read_json(request) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise JobError(400, "The request body is not valid JSON: send a JSON object with Content-Type: application/json.") from None
    if not isinstance(body, dict):
        raise JobError(400, "The request body must be a JSON object.")
    return body


def own_job(request, public_id: str) -> InferenceJob:
    # Another user's job does not exist for the caller, the superuser included: 404, so ids cannot be probed.
    job = InferenceJob.objects.select_related("resource", "version").filter(public_id=public_id, user=request.user).first()
    if job is None:
        raise JobError(404, f"You have no job {public_id}. GET /api/jobs lists your jobs.")
    return job


@api_view("GET", "POST")
def jobs(request):
    if request.method == "GET":
        return _jobs_list(request)
    body = read_json(request)
    version = services.version_for_model(request.user, body.get("model") or "")
    kind = body.get("kind", InferenceJob.Kind.GENERATE)
    params = params_validate(kind=kind, body=body, version=version)
    job, created = services.job_submit(user=request.user, version=version, kind=kind, params=params,
                                       via=InferenceJob.Via.API, token=request.access_token, request=request)
    response = JsonResponse(formatting.job_json(job), status=201 if created else 200)
    response["Location"] = reverse("api_job", args=[job.public_id])
    return response


def _jobs_list(request):
    jobs = InferenceJob.objects.filter(user=request.user).select_related("resource", "version")
    status = request.GET.get("status")
    if status:
        if status not in InferenceJob.Status.values:
            raise JobError(400, f"status must be one of {', '.join(InferenceJob.Status.values)}, not {status!r}.")
        jobs = jobs.filter(status=status)
    return JsonResponse({"object": "list", "data": [formatting.job_json(job) for job in jobs[:LIST_LIMIT]]})


@api_view("GET")
def job_detail(request, public_id: str):
    return JsonResponse(formatting.job_json(own_job(request, public_id)))


@api_view("POST")
def job_cancel(request, public_id: str):
    job = services.job_cancel(job=own_job(request, public_id), actor=request.user, request=request)
    return JsonResponse(formatting.job_json(job))


@csrf_exempt
@never_cache
def openapi(request):
    # Public: it describes the API, which tells nothing of any checkpoint or user.
    if request.method not in ("GET", "HEAD"):
        return _method_refusal(request, ("GET", "HEAD"))
    return JsonResponse(openapi_document(base_url=settings.PORTAL_BASE_URL))
