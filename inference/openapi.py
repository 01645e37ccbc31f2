"""The OpenAPI 3.1 document of the research API, served at /api/openapi.json.

Written by hand next to the views it describes (inference.api_views, inference.openai_views);
tests/inference/test_openapi.py validates every real response of the tests against it, so a view
that drifts from this document fails there.
"""

from __future__ import annotations

from inference.models import InferenceJob

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_TOP = {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "number"}],
                                   "minItems": 2, "maxItems": 2}}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
            "message": {"type": "string", "description": "What happened and what to do."},
            "type": {"type": "string"}, "code": {"type": "string"}}}},
    },
    "Usage": {
        "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {name: {"type": "integer", "minimum": 0} for name in ("prompt_tokens", "completion_tokens", "total_tokens")},
    },
    "JobRequest": {
        "type": "object", "required": ["model"],
        "description": "The job's parameters beside model and kind. generate: prompt (a text, texts, token ids or lists "
                       "of token ids) or prompts, max_new_tokens, temperature (0 = greedy), top_p, seed, stop, logprobs "
                       "(0-5), echo. score: requests [{context, continuation}] (texts or token ids). inspect: prompt, "
                       "layers, positions, top_k (1-20). Token ids are used as given; texts are tokenized with the "
                       "checkpoint's tokenizer, nothing prepended.",
        "properties": {"model": {"type": "string", "description": "namespace/slug, or namespace/slug@version"},
                       "kind": {"enum": InferenceJob.Kind.values}},
    },
    "Job": {
        "type": "object",
        "required": ["id", "object", "kind", "status", "model", "via", "params", "outputs", "queue_position",
                     "cancel_requested", "usage", "error", "created_at", "started_at", "first_token_at", "finished_at"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "inference.job"}, "kind": {"enum": InferenceJob.Kind.values},
            "status": {"enum": InferenceJob.Status.values}, "model": {"type": "string"},
            "via": {"enum": InferenceJob.Via.values},
            "params": {"type": "object", "description": "The validated parameters, prompts as token ids."},
            "outputs": {"type": "array", "items": {"anyOf": [
                {"$ref": "#/components/schemas/GenerateOutput"}, {"$ref": "#/components/schemas/ScoreOutput"},
                {"$ref": "#/components/schemas/InspectOutput"}]},
                "description": "One per prompt (generate), request (score), or one (inspect); filled as the job runs."},
            "queue_position": {"type": ["integer", "null"], "minimum": 1},
            "cancel_requested": {"type": "boolean"}, "usage": {"$ref": "#/components/schemas/Usage"},
            "error": {"type": ["string", "null"]},
            **{name: {"type": ["string", "null"], "format": "date-time"}
               for name in ("created_at", "started_at", "first_token_at", "finished_at")},
        },
    },
    "GenerateOutput": {
        "type": "object", "required": ["token_ids", "text"],
        "properties": {
            "token_ids": {"type": "array", "items": {"type": "integer"}},
            "text": {"type": ["string", "null"], "description": "The new tokens decoded, cut before the first stop "
                                                               "string; null when the checkpoint's tokenizer cannot be read."},
            "finish_reason": {"enum": ["stop", "length", None]},
            "token_logprobs": {"type": ["array", "null"], "items": {"type": "number"}},
            "top_logprobs": {"type": ["array", "null"], "items": _TOP},
            "prompt_logprobs": {"type": ["array", "null"], "items": _NUMBER_OR_NULL},
            "prompt_top_logprobs": {"type": ["array", "null"], "items": {"anyOf": [_TOP, {"type": "null"}]}},
        },
    },
    "ScoreOutput": {
        "type": "object", "required": ["token_logprobs", "sum", "is_greedy"],
        "properties": {"token_logprobs": {"type": "array", "items": _NUMBER_OR_NULL}, "sum": {"type": "number"},
                       "is_greedy": {"type": "boolean"}},
    },
    "InspectOutput": {
        "type": "object", "required": ["hidden_states", "logit_lens"],
        "properties": {"hidden_states": {"type": "object"}, "logit_lens": {"type": "object"}},
    },
    "JobList": {"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}},
    "CompletionRequest": {
        "type": "object", "required": ["model", "prompt"],
        "description": "Other fields are ignored. n must be 1; stream is not supported.",
        "properties": {
            "model": {"type": "string"},
            "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                                 {"type": "array", "items": {"type": "integer"}},
                                 {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}],
                       "description": "Token ids are used as given, never re-tokenised; nothing is prepended."},
            "max_tokens": {"type": "integer", "minimum": 0, "description": "0 only with echo."},
            "temperature": {"type": "number", "minimum": 0, "description": "0 is greedy."},
            "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "seed": {"type": ["integer", "null"]},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
            "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
            "echo": {"type": "boolean"}, "n": {"const": 1},
        },
    },
    "Completion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string", "description": "The job's id: GET /api/jobs/{id} shows it."},
            "object": {"const": "text_completion"}, "created": {"type": "integer"}, "model": {"type": "string"},
            "usage": {"$ref": "#/components/schemas/Usage"},
            "choices": {"type": "array", "items": {
                "type": "object", "required": ["index", "text", "finish_reason", "logprobs"],
                "properties": {
                    "index": {"type": "integer"}, "text": {"type": "string"}, "finish_reason": {"enum": ["stop", "length"]},
                    "logprobs": {"anyOf": [{"type": "null"}, {
                        "type": "object", "required": ["tokens", "token_logprobs", "top_logprobs", "text_offset"],
                        "description": "With echo the prompt's tokens come first, the first with null log-probabilities.",
                        "properties": {
                            "tokens": {"type": "array", "items": {"type": "string"}},
                            "token_logprobs": {"type": "array", "items": _NUMBER_OR_NULL},
                            "top_logprobs": {"type": ["array", "null"], "items": {
                                "type": ["object", "null"], "additionalProperties": {"type": "number"}}},
                            "text_offset": {"type": "array", "items": {"type": "integer"}},
                        }}]},
                }}},
        },
    },
    "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object", "created", "owned_by", "version", "revision"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                           "owned_by": {"type": "string"}, "version": {"type": "string"}, "revision": {"type": "string"}}}}}},
    "TokenizerInfo": {"type": "object", "required": ["eos_token", "bos_token", "pad_token", "model"], "properties": {
        "eos_token": {"type": ["string", "null"]}, "bos_token": {"type": ["string", "null"]},
        "pad_token": {"type": ["string", "null"]}, "model": {"type": "string"}, "max_model_len": {"type": "integer"}}},
    "TokenizeRequest": {"type": "object", "required": ["prompt"], "properties": {
        "prompt": {"type": "string"}, "add_special_tokens": {"type": "boolean"}, "model": {"type": "string"}}},
    "Tokens": {"type": "object", "required": ["tokens"], "properties": {
        "tokens": {"type": "array", "items": {"type": "integer"}}, "count": {"type": "integer"},
        "max_model_len": {"type": "integer"}}},
    "DetokenizeRequest": {"type": "object", "required": ["tokens"], "properties": {
        "tokens": {"type": "array", "items": {"type": "integer"}}, "model": {"type": "string"}}},
    "Text": {"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
}


def _json(schema: str) -> dict:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _answers(ok: dict, *refusals: int) -> dict:
    """`ok` ({status: (description, schema)}) and every refusal, all in the Error shape. 401, 403 and 405
    can answer any operation (inference.api_views.api_view: a bad token, a token without the inference
    scope or a session call without its CSRF token, a wrong method)."""
    words = {400: "Invalid parameters", 401: "Not signed in, or a bad token",
             403: "No grant, a token without the inference scope, or a session call without its CSRF token",
             404: "No such checkpoint or job of yours", 405: "Method not allowed",
             409: "Conflict (the job already ended, or was cancelled)", 429: "A limit was reached (Retry-After)",
             500: "The job failed, or the checkpoint's tokenizer cannot be read", 503: "Still running after the wait (Retry-After): send the same request again"}
    answers = {str(status): {"description": description, **_json(schema)} for status, (description, schema) in ok.items()}
    for status in (401, 403, 405, *refusals):
        answers[str(status)] = {"description": words[status], **_json("Error")}
    return answers


def _body(schema: str) -> dict:
    return {"requestBody": {"required": True, **_json(schema)}}


_JOB_ID = [{"name": "public_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_MODEL = [{"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
           "description": "Needed only when the checkpoints you may use have different tokenizers."}]

PATHS = {
    "/api/jobs": {
        "get": {"operationId": "jobs_list", "summary": "Your jobs, newest first (at most 100)",
                "parameters": [{"name": "status", "in": "query", "required": False,
                                "schema": {"enum": InferenceJob.Status.values}}],
                "responses": _answers({200: ("Your jobs", "JobList")}, 400)},
        "post": {"operationId": "jobs_create", "summary": "Queue a job (an identical unfinished one is joined: 200)",
                 **_body("JobRequest"),
                 "responses": _answers({201: ("Queued", "Job"), 200: ("Joined the identical job already queued or running", "Job")},
                                       400, 404, 429, 500)},
    },
    "/api/jobs/{public_id}": {"get": {"operationId": "jobs_read", "summary": "One of your jobs, its outputs as they grow",
                                      "parameters": _JOB_ID, "responses": _answers({200: ("The job", "Job")}, 404)}},
    "/api/jobs/{public_id}/cancel": {"post": {
        "operationId": "jobs_cancel", "summary": "Cancel a job: queued at once, running at the worker's next pass",
        "parameters": _JOB_ID, "responses": _answers({200: ("The job", "Job")}, 404, 409)}},
    "/api/v1/completions": {"post": {
        "operationId": "completions", "summary": "OpenAI-compatible completion (waits for its job)", **_body("CompletionRequest"),
        "responses": _answers({200: ("The completion", "Completion")}, 400, 404, 409, 429, 500, 503)}},
    "/api/v1/models": {"get": {"operationId": "models", "summary": "The checkpoints you may use",
                               "responses": _answers({200: ("Models", "ModelList")})}},
    "/api/tokenizer_info": {"get": {"operationId": "tokenizer_info", "summary": "Special tokens of the tokenizer",
                                    "parameters": _MODEL, "responses": _answers({200: ("Special tokens", "TokenizerInfo")}, 400, 404, 500)}},
    "/api/tokenize": {"post": {"operationId": "tokenize", "summary": "Text to token ids", **_body("TokenizeRequest"),
                               "responses": _answers({200: ("Token ids", "Tokens")}, 400, 404, 500)}},
    "/api/detokenize": {"post": {"operationId": "detokenize", "summary": "Token ids to text", **_body("DetokenizeRequest"),
                                 "responses": _answers({200: ("Text", "Text")}, 400, 404, 500)}},
    # Public (no security): it describes the API and tells nothing of any checkpoint or user.
    "/api/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [], "responses": {
        "200": {"description": "The OpenAPI document of the research API", "content": {"application/json": {"schema": {
            "type": "object", "required": ["openapi", "info", "paths", "components"],
            "properties": {"openapi": {"type": "string"}, "info": {"type": "object"}, "servers": {"type": "array"},
                           "security": {"type": "array"}, "paths": {"type": "object"}, "components": {"type": "object"}}}}}}}}},
}


def openapi_document(*, base_url: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Research API", "version": "1",
                 "description": "Gated inference jobs on the released checkpoints: a grant covering the checkpoint "
                                "(license accepted) is needed, and a token with the 'inference' scope for scripts."},
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An access token with the 'inference' scope."},
            "session": {"type": "apiKey", "in": "cookie", "name": "sessionid",
                        "description": "The portal's session; calls that change something need the X-CSRFToken header."}}},
    }
