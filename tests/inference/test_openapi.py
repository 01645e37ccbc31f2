"""The OpenAPI document at /api/openapi.json (inference.openapi) held against the research API's real
answers: a valid OpenAPI 3.1 document, every path the URL conf serves under /api/ in it, and every
response below (jobs queued, run by inference.runner in this process or moved on through
inference.scheduler, and every refusal) valid against the schema of its path, method and status.

The document's object schemas are made strict here (no property they do not name), so that a view
that adds a field without documenting it fails too."""

from __future__ import annotations

import copy
import json
import shutil
import threading
import time

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from datasets_app.publishing import version_publish
from datasets_app.tokens import access_token_create
from inference import runner, scheduler, services, urls
from inference.models import InferenceJob
from tests.conftest import client_for
from tests.inference.conftest_jobs import _own_inference_cache, model, submit  # noqa: F401 (fixtures)
from tests.inference.test_api import post
from tests.test_worker import worker_queue  # noqa: F401 (a fixture)

URI = "urn:portal:openapi"
MODEL = "test/corpus-a"


def _strict(schema):
    """The schema with every object schema that names its properties closed to others."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["unevaluatedProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


class OpenAPI:
    """The served document, and checks of a response, or of an accepted request, against it."""

    def __init__(self, document: dict):
        self.document = document
        strict = {**document, "components": _strict(copy.deepcopy(document["components"])),
                  "paths": _strict(copy.deepcopy(document["paths"]))}
        # Responses against the strict document; requests against the document as served, since the
        # API ignores fields it does not read (other clients' defaults).
        self.registry = Registry().with_resources([(URI, Resource(contents=strict, specification=DRAFT202012)),
                                                   (URI + ":requests", Resource(contents=document, specification=DRAFT202012))])

    def _assert_valid(self, instance, ref: str, what: str) -> None:
        validator = Draft202012Validator({"$ref": ref}, registry=self.registry, format_checker=FormatChecker())
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
        assert not errors, f"{what} does not match the document:\n" + "\n".join(errors[:10])

    def check(self, response, path: str, method: str) -> dict:
        """The response's JSON, after checking it against the schema of (path, method, its status)."""
        status = str(response.status_code)
        answers = self.document["paths"][path][method]["responses"]
        assert status in answers, f"{method.upper()} {path} answered {status}, which the document does not list: {response.content[:300]}"
        assert response["Content-Type"] == "application/json"
        body = response.json()
        self._assert_valid(body, f"{URI}#/paths/{_escape(path)}/{method}/responses/{status}/content/application~1json/schema",
                           f"{method.upper()} {path} {status}")
        return body

    def accepted(self, client, path: str, body: dict) -> dict:
        """POST body, which the document must describe, and check the success it answers."""
        self._assert_valid(body, f"{URI}:requests#/paths/{_escape(path)}/post/requestBody/content/application~1json/schema",
                           f"The request {body}")
        response = post(client, path, body)
        assert response.status_code in (200, 201), response.content
        return self.check(response, path, "post")


def _escape(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")  # a JSON pointer's token


@pytest.fixture
def openapi(client) -> OpenAPI:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return OpenAPI(response.json())


def test_it_is_a_valid_openapi_document_of_every_path_under_api(client, openapi):
    document = openapi.document
    # Served to anyone (it describes the API, nobody's data), and described in itself.
    openapi.check(client.get("/api/openapi.json"), "/api/openapi.json", "get")
    posted = client.post("/api/openapi.json", "{}", content_type="application/json")  # a script's mistake: JSON, not HTML
    assert posted.status_code == 405 and posted["Allow"] == "GET, HEAD" and posted.json()["error"]["code"] == "method_not_allowed"
    validate_openapi(document)  # the OpenAPI 3.1 schema, through jsonschema
    assert document["openapi"].startswith("3.1")
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)  # OpenAPI 3.1's schema dialect is JSON Schema 2020-12
    # Every reference resolves, and every operation is named once.
    registry = Registry().with_resource(URI, Resource(contents=document, specification=DRAFT202012))
    text = json.dumps(document)
    for ref in sorted(set(part.split('"')[0] for part in text.split('"$ref": "')[1:])):
        registry.resolver(URI).lookup(URI + ref)
    operations = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operations) == len(set(operations))

    served = set()
    for pattern in urls.urlpatterns:
        names = list(pattern.pattern.converters)
        url = reverse(pattern.name, kwargs={name: f"PARAM{name}" for name in names})
        for name in names:
            url = url.replace(f"PARAM{name}", "{" + name + "}")
        served.add(url)
        documented = [p["name"] for item in document["paths"].get(url, {}).values() for p in item.get("parameters", [])
                      if p["in"] == "path"]
        assert set(documented) == set(names) or not names, (url, documented)
    assert served == set(document["paths"]), f"served but not documented: {served - set(document['paths'])}; " \
                                             f"documented but not served: {set(document['paths']) - served}"


def test_it_documents_the_jobs_api_as_it_answers(cast, model, openapi, settings):
    check, accepted = openapi.check, openapi.accepted
    client = client_for(Client(), cast, "granted")
    body = {"model": MODEL, "prompt": "All human beings are", "max_new_tokens": 8, "stop": ["equal"]}

    created = check(post(client, "/api/jobs", body), "/api/jobs", "post")
    joined = post(client, "/api/jobs", body)
    assert joined.status_code == 200 and check(joined, "/api/jobs", "post")["id"] == created["id"]
    score = accepted(client, "/api/jobs", {"model": MODEL, "kind": "score", "requests": [
        {"context": "The sky is", "continuation": " blue"}, {"context": [], "continuation": [5, 6]}]})
    inspect = accepted(client, "/api/jobs", {"model": MODEL, "kind": "inspect", "prompt": "Hello world",
                                               "layers": [0, 6], "positions": [-1], "top_k": 3})
    echo = accepted(client, "/api/jobs", {"model": MODEL, "prompt": [5, 6, 7], "max_new_tokens": 0, "echo": True,
                                            "logprobs": 2})

    # Every kind done, as the runner in this process writes their outputs.
    runner.run(version_id=model.pk, worker_name="test-runner", stop_when_idle=0)
    for job in (created, score, inspect, echo):
        done = check(client.get(f"/api/jobs/{job['id']}"), "/api/jobs/{public_id}", "get")
        assert done["status"] == "done" and done["outputs"], done
    listed = check(client.get("/api/jobs"), "/api/jobs", "get")
    assert len(listed["data"]) == 4
    check(client.get("/api/jobs?status=lost"), "/api/jobs", "get")

    # A generation as a worker writes it, its cancel asked for while it runs.
    running = accepted(client, "/api/jobs", {**body, "prompt": "Hi"})
    (claimed,) = scheduler.jobs_claim(version_id=model.pk, worker="w1", slots=1, lease_seconds=60)
    scheduler.job_progress(job_id=claimed.pk, worker="w1", completion_tokens=2, first_token=True, outputs=[{
        "token_ids": [265, 265], "finish_reason": None, "token_logprobs": [-1.5, -0.5], "top_logprobs": [[[265, -0.5]]] * 2,
        "prompt_logprobs": None, "prompt_top_logprobs": None}])
    shown = check(client.get(f"/api/jobs/{running['id']}"), "/api/jobs/{public_id}", "get")
    assert shown["status"] == "running" and shown["outputs"][0]["text"] == "rere"
    stopping = check(post(client, f"/api/jobs/{running['id']}/cancel", {}), "/api/jobs/{public_id}/cancel", "post")
    assert stopping["status"] == "running" and stopping["cancel_requested"]

    # Cancelling: a queued job, then an ended one (409); another user's job does not exist (404).
    queued = accepted(client, "/api/jobs", {**body, "prompt": "Hello"})
    assert check(post(client, f"/api/jobs/{queued['id']}/cancel", {}), "/api/jobs/{public_id}/cancel", "post")["status"] == "cancelled"
    assert post(client, f"/api/jobs/{created['id']}/cancel", {}).status_code == 409
    check(post(client, f"/api/jobs/{created['id']}/cancel", {}), "/api/jobs/{public_id}/cancel", "post")
    stranger = client_for(Client(), cast, "stranger")
    for response, path, method in (
            (stranger.get(f"/api/jobs/{created['id']}"), "/api/jobs/{public_id}", "get"),
            (post(stranger, f"/api/jobs/{created['id']}/cancel", {}), "/api/jobs/{public_id}/cancel", "post"),
            (post(stranger, "/api/jobs", body), "/api/jobs", "post"),  # 403: no grant
            (post(client, "/api/jobs", {**body, "model": "test/nothing"}), "/api/jobs", "post"),
            (post(client, "/api/jobs", {**body, "temperature": -1}), "/api/jobs", "post"),
            (client.delete("/api/jobs"), "/api/jobs", "post"),  # 405, documented on every operation
            (Client().get("/api/jobs"), "/api/jobs", "get"),  # 401
            (post(Client(), f"/api/jobs/{created['id']}/cancel", {}), "/api/jobs/{public_id}/cancel", "post")):
        assert response.status_code >= 400
        check(response, path, method)
    _, read_only = access_token_create(user=cast.granted, name="laptop", scopes=["read"], days=30)
    refused = post(Client(), f"/api/jobs/{queued['id']}/cancel", {}, HTTP_AUTHORIZATION=f"Bearer {read_only}")
    assert refused.status_code == 403
    check(refused, "/api/jobs/{public_id}/cancel", "post")
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 2  # the running job and one more
    accepted(client, "/api/jobs", {**body, "prompt": "Bonjour"})
    limited = post(client, "/api/jobs", {**body, "prompt": "Hola"})
    assert limited.status_code == 429
    check(limited, "/api/jobs", "post")


def _while_waiting(action):
    """Runs action(job) on another connection once a completion's job is queued: what a worker or the
    owner does while the completion call waits for it."""

    def watch():
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                job = InferenceJob.objects.filter(status="queued").first()
                if job is not None:
                    action(job)
                    return
                time.sleep(0.05)
        finally:
            connection.close()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_it_documents_the_openai_compatible_api_as_it_answers(transactional_db, cast, model, openapi, settings):
    check, accepted = openapi.check, openapi.accepted
    client = client_for(Client(), cast, "granted")
    path = "/api/v1/completions"
    # The runner message of a job runs in this process (tests/conftest.py's eager Celery), once the
    # job is committed: the call finds it done.
    settings.INFERENCE_IDLE_SECONDS = 0
    completion = accepted(client, path, {"model": MODEL, "prompt": ["All human beings are", "Hello"], "max_tokens": 4,
                                           "logprobs": 2, "echo": True, "stop": ["zz"], "best_of": 1})
    assert len(completion["choices"]) == 2 and completion["choices"][0]["logprobs"]["token_logprobs"][0] is None
    plain = accepted(client, path, {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": 3})
    assert plain["choices"][0]["logprobs"] is None
    zero = accepted(client, path, {"model": MODEL, "prompt": "Hello", "max_tokens": 2, "logprobs": 0})
    assert all(not top for top in zero["choices"][0]["logprobs"]["top_logprobs"])

    for body, status in (({"model": MODEL, "prompt": "Hi", "n": 2}, 400), ({"model": "test/nothing", "prompt": "Hi"}, 404)):
        refused = post(client, path, body)
        assert refused.status_code == status
        check(refused, path, "post")
    check(post(client_for(Client(), cast, "pending"), path, {"model": MODEL, "prompt": "Hi"}), path, "post")
    check(client.get(path), path, "post")  # 405

    models = check(client.get("/api/v1/models"), "/api/v1/models", "get")
    assert [m["id"] for m in models["data"]] == [MODEL]
    check(Client().get("/api/v1/models"), "/api/v1/models", "get")  # 401


def test_it_documents_the_tokenizer_endpoints_as_they_answer(cast, model, openapi):
    check, accepted = openapi.check, openapi.accepted
    client = client_for(Client(), cast, "granted")
    info = check(client.get("/api/tokenizer_info"), "/api/tokenizer_info", "get")
    assert info["eos_token"] == "</s>"
    check(client.get("/api/tokenizer_info?model=test/nothing"), "/api/tokenizer_info", "get")  # 404
    check(client_for(Client(), cast, "stranger").get("/api/tokenizer_info"), "/api/tokenizer_info", "get")  # 403
    tokens = accepted(client, "/api/tokenize", {"prompt": "Hello world", "model": MODEL})
    check(post(client, "/api/tokenize", {"prompt": 5}), "/api/tokenize", "post")  # 400
    check(post(client_for(Client(), cast, "pending"), "/api/tokenize", {"prompt": "Hi", "model": MODEL}), "/api/tokenize", "post")
    text = accepted(client, "/api/detokenize", {"tokens": tokens["tokens"]})
    assert text["prompt"] == "Hello world"
    check(post(client, "/api/detokenize", {"tokens": [10**6]}), "/api/detokenize", "post")  # 400
    check(post(client, "/api/detokenize", {"tokens": [5], "model": "test/nothing"}), "/api/detokenize", "post")  # 404


def test_it_documents_what_a_completion_meets_while_it_waits(transactional_db, cast, model, openapi, settings,
                                                             worker_queue):  # noqa: F811
    # No worker reads this test's queue: jobs stay queued unless the other connection moves them on.
    check = openapi.check
    client = client_for(Client(), cast, "granted")
    path = "/api/v1/completions"
    settings.INFERENCE_WAIT_SECONDS = 1
    waited = post(client, path, {"model": MODEL, "prompt": "Nobody runs this", "max_tokens": 2})
    assert waited.status_code == 503 and waited["Retry-After"] == "1"
    check(waited, path, "post")
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 1
    limited = post(client, path, {"model": MODEL, "prompt": "Nor this", "max_tokens": 2})
    assert limited.status_code == 429
    check(limited, path, "post")
    services.job_cancel(job=InferenceJob.objects.get(), actor=cast.granted)

    settings.INFERENCE_WAIT_SECONDS = 60

    def fail(job):
        (claimed,) = scheduler.jobs_claim(version_id=job.version_id, worker="w1", slots=1, lease_seconds=60)
        scheduler.job_fail(job_id=claimed.pk, worker="w1", error="The worker ran out of memory.")

    thread = _while_waiting(fail)
    failed = post(client, path, {"model": MODEL, "prompt": "This fails", "max_tokens": 2})
    thread.join()
    assert failed.status_code == 500 and "ran out of memory" in failed.json()["error"]["message"]
    check(failed, path, "post")

    thread = _while_waiting(lambda job: services.job_cancel(job=job, actor=job.user))
    cancelled = post(client, path, {"model": MODEL, "prompt": "This is cancelled", "max_tokens": 2})
    thread.join()
    assert cancelled.status_code == 409
    check(cancelled, path, "post")


def test_it_documents_a_token_without_the_inference_scope_refused_by_every_operation(cast, model, openapi):
    _, read_only = access_token_create(user=cast.granted, name="laptop", scopes=["read"], days=30)
    job, _ = submit(cast.granted, model)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {read_only}")
    for path, item in openapi.document["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == []:
                continue  # public
            url = path.replace("{public_id}", job.public_id)
            response = client.get(url) if method == "get" else post(client, url, {"model": MODEL, "prompt": "Hi", "tokens": [5]})
            assert response.status_code == 403, (method, path, response.content)
            assert "lacks the 'inference' scope" in openapi.check(response, path, method)["error"]["message"]


def test_it_documents_the_answers_about_a_checkpoint_whose_tokenizer_cannot_be_read(cast, model, openapi, tiny_checkpoint, tmp_path):
    # A version published with a damaged tokenizer.json: what needs the tokenizer is a 500 that says so,
    # and a job of token ids on it is still listed, with its exact token ids.
    broken = shutil.copytree(tiny_checkpoint, tmp_path / "broken")
    (broken / "tokenizer.json").write_text("not a tokenizer")
    version_publish(resource=cast.resource_a, name="v2", source=str(broken), actor=cast.admin)
    check, accepted = openapi.check, openapi.accepted
    client = client_for(Client(), cast, "granted")
    v2 = f"{MODEL}@v2"

    for response, path, method in (
            (post(client, "/api/jobs", {"model": v2, "prompt": "Hello"}), "/api/jobs", "post"),
            (post(client, "/api/v1/completions", {"model": v2, "prompt": "Hello"}), "/api/v1/completions", "post"),
            (client.get("/api/tokenizer_info"), "/api/tokenizer_info", "get"),
            (post(client, "/api/tokenize", {"prompt": "Hello", "model": v2}), "/api/tokenize", "post"),
            (post(client, "/api/detokenize", {"tokens": [5], "model": v2}), "/api/detokenize", "post")):
        assert response.status_code == 500, (path, response.content)
        assert "tokenizer.json" in check(response, path, method)["error"]["message"]

    job = accepted(client, "/api/jobs", {"model": v2, "prompt": [5, 6, 7], "max_new_tokens": 2})
    (claimed,) = scheduler.jobs_claim(version_id=InferenceJob.objects.get(public_id=job["id"]).version_id, worker="w1", slots=1, lease_seconds=60)
    scheduler.job_finish(job_id=claimed.pk, worker="w1", prompt_tokens=3, completion_tokens=2, outputs=[{
        "token_ids": [265, 265], "finish_reason": "length", "token_logprobs": [-1.5, -0.5], "top_logprobs": None,
        "prompt_logprobs": None, "prompt_top_logprobs": None}])
    (listed,) = check(client.get("/api/jobs"), "/api/jobs", "get")["data"]
    assert listed["status"] == "done" and listed["outputs"][0]["token_ids"] == [265, 265] and listed["outputs"][0]["text"] is None
    assert check(client.get(f"/api/jobs/{job['id']}"), "/api/jobs/{public_id}", "get")["outputs"] == listed["outputs"]

