"""The OpenAI-compatible API under /api/: what the `openai` client (base_url <portal>/api/v1) and
lm-evaluation-harness's local-completions model (with its remote tokenizer) call.

A completion is an inference job like any other (inference.services.job_submit, via "openai"): the
call waits for it up to INFERENCE_WAIT_SECONDS, and a client that retries the same request after a
timeout joins the job already running instead of starting another.
"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from django.urls import reverse

from datasets_app.models import File
from inference import formatting, services
from inference.api_views import api_view, read_json
from inference.errors import JobError
from inference.models import InferenceJob
from inference.params import params_validate
from inference.tokenizer import context_length, special_tokens, tokenizer_for, vocab_size

# The completion fields this API reads; any other field (best_of, user, presence_penalty, ...) is
# ignored, as the issue asks, so that clients sending their defaults work unchanged.
COMPLETION_FIELDS = ("prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "logprobs", "echo")


@api_view("POST")
def completions(request):
    body = read_json(request)
    if body.get("n") not in (None, 1):
        raise JobError(400, f"n must be 1 (got {body['n']!r}): send the request again, with another seed, for another sample.")
    if body.get("stream"):
        raise JobError(400, "stream is not supported: send the request without it; the reply comes when the job ends.")
    version = services.version_for_model(request.user, body.get("model") or "")
    given = {name: body[name] for name in COMPLETION_FIELDS if body.get(name) is not None}
    params = params_validate(kind=InferenceJob.Kind.GENERATE, body=given, version=version)
    job, _ = services.job_submit(user=request.user, version=version, kind=InferenceJob.Kind.GENERATE, params=params,
                                 via=InferenceJob.Via.OPENAI, token=request.access_token, request=request)
    job = services.job_wait(job=job, timeout=settings.INFERENCE_WAIT_SECONDS)
    if job.status == InferenceJob.Status.DONE:
        return JsonResponse(formatting.completion_json(job, model=body["model"]))
    if job.status == InferenceJob.Status.FAILED:
        raise JobError(500, f"Job {job.public_id} failed: {job.error}", code="job_failed")
    if job.status == InferenceJob.Status.CANCELLED:
        raise JobError(409, f"Job {job.public_id} was cancelled: {job.error}", code="cancelled")
    raise JobError(503, f"Job {job.public_id} is still {job.status} after {settings.INFERENCE_WAIT_SECONDS} s: send the same "
                        f"request again to go on waiting for it (it is not run twice), or follow it at "
                        f"{reverse('api_job', args=[job.public_id])}.", code="timeout", retry_after=1)


@api_view("GET")
def models(request):
    data = [{"id": version.resource.repo_id, "object": "model", "created": int(version.published_at.timestamp()),
             "owned_by": version.resource.namespace, "version": version.name, "revision": version.revision}
            for version in services.usable_checkpoints(request.user)]
    return JsonResponse({"object": "list", "data": data})


def _tokenizer_version(request, body: dict | None = None):
    """The checkpoint whose tokenizer is meant: `model` when given; else the one tokenizer of all the
    checkpoints the caller may use (lm-evaluation-harness's remote tokenizer names no model)."""
    model = (body or {}).get("model") or request.GET.get("model")
    if model:
        return services.version_for_model(request.user, model)
    usable = services.usable_checkpoints(request.user)
    if not usable:
        raise JobError(403, "You may not run any checkpoint yet: request access to one in the catalogue "
                            f"({settings.PORTAL_BASE_URL}{reverse('catalogue')}).")
    digests = set(File.objects.filter(version__in=usable, path="tokenizer.json").values_list("sha256", flat=True))
    if len(digests) > 1:
        raise JobError(400, "The checkpoints you may use have different tokenizers: name one with \"model\" "
                            "(GET /api/v1/models lists them).")
    return usable[0]


def _max_model_len(version) -> int:
    # The most tokens one sequence may hold (vLLM's meaning): the model's context, within which the
    # portal's limits on prompts and new tokens apply.
    return min(context_length(version), settings.INFERENCE_MAX_PROMPT_TOKENS + settings.INFERENCE_MAX_NEW_TOKENS)


@api_view("GET")
def tokenizer_info(request):
    version = _tokenizer_version(request)
    return JsonResponse({**special_tokens(version), "model": version.resource.repo_id, "max_model_len": _max_model_len(version)})


@api_view("POST")
def tokenize(request):
    body = read_json(request)
    version = _tokenizer_version(request, body)
    text = body.get("prompt")
    if not isinstance(text, str):
        raise JobError(400, "prompt must be a text: {\"prompt\": \"...\"}.")
    add_special = body.get("add_special_tokens", False)
    if not isinstance(add_special, bool):
        raise JobError(400, "add_special_tokens must be true or false.")
    ids = tokenizer_for(version).encode(text, add_special_tokens=add_special).ids
    return JsonResponse({"tokens": ids, "count": len(ids), "max_model_len": _max_model_len(version)})


@api_view("POST")
def detokenize(request):
    body = read_json(request)
    version = _tokenizer_version(request, body)
    ids = body.get("tokens")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise JobError(400, "tokens must be a list of token ids (whole numbers): {\"tokens\": [...]}.")
    vocab = vocab_size(version)
    wrong = [i for i in ids if not 0 <= i < vocab]
    if wrong:
        raise JobError(400, f"tokens holds ids outside the vocabulary of {version} (0 to {vocab - 1}): "
                            f"{', '.join(map(str, wrong[:5]))}.")
    return JsonResponse({"prompt": tokenizer_for(version).decode(ids, skip_special_tokens=False)})
