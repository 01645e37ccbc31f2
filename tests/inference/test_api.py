"""The JSON API of inference jobs (/api/jobs): create, list, read and cancel one's own jobs, by session
or by a token with the inference scope, and every refusal in one JSON shape with its headers."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from datasets_app.tokens import access_token_create
from inference import scheduler
from inference.models import InferenceJob
from inference.tokenizer import tokenizer_for
from tests.conftest import client_for
from tests.inference.conftest_jobs import _own_inference_cache, model, submit  # noqa: F401 (fixtures)


def post(client, url: str, body: dict, **headers):
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


def assert_refused(response, status: int, code: str, words: str) -> dict:
    """The refusal shape every endpoint of the research API answers with."""
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and response["X-Error-Code"] == code
    assert words in error["message"] and words in response["X-Error-Message"]
    assert set(error) == {"message", "type", "code"}
    return error


def test_it_creates_lists_reads_and_cancels_a_job_of_its_owner(cast, model):
    client = client_for(Client(), cast, "granted")
    body = {"model": "test/corpus-a", "kind": "generate", "prompt": "All human beings are", "max_new_tokens": 4}

    created = post(client, "/api/jobs", body)
    assert created.status_code == 201
    job = created.json()
    assert created["Location"] == f"/api/jobs/{job['id']}"
    assert (job["status"], job["kind"], job["model"], job["via"], job["queue_position"]) == ("queued", "generate", "test/corpus-a@v1", "api", 1)
    # Tokenized with the checkpoint's own tokenizer, nothing prepended.
    assert job["params"]["prompts"] == [tokenizer_for(model).encode("All human beings are", add_special_tokens=False).ids]

    retried = post(client, "/api/jobs", body)
    assert retried.status_code == 200 and retried.json()["id"] == job["id"]
    assert InferenceJob.objects.count() == 1

    listed = client.get("/api/jobs").json()
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    assert client.get("/api/jobs?status=done").json()["data"] == []
    assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "queued"

    cancelled = post(client, f"/api/jobs/{job['id']}/cancel", {})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert "Cancelled by granted" in cancelled.json()["error"]


def test_it_shows_the_output_as_the_worker_writes_it_with_the_text_cut_at_the_stop_string(cast, model):
    client = client_for(Client(), cast, "granted")
    job = post(client, "/api/jobs", {"model": "test/corpus-a@v1", "prompt": "Hello", "max_new_tokens": 8, "stop": ["equal"]}).json()
    (claimed,) = scheduler.jobs_claim(version_id=model.pk, worker="w1", slots=4, lease_seconds=60)
    tokenizer = tokenizer_for(model)
    ids = tokenizer.encode(" born free and equal in dignity", add_special_tokens=False).ids
    output = {"finish_reason": None, "token_logprobs": [-1.0] * len(ids), "top_logprobs": None,
              "prompt_logprobs": None, "prompt_top_logprobs": None}

    scheduler.job_progress(job_id=claimed.pk, worker="w1", outputs=[{**output, "token_ids": ids[:2]}], completion_tokens=2, first_token=True)
    running = client.get(f"/api/jobs/{job['id']}").json()
    assert running["status"] == "running" and running["outputs"][0]["text"] == tokenizer.decode(ids[:2])
    assert running["started_at"] and running["first_token_at"] and running["queue_position"] is None

    scheduler.job_finish(job_id=claimed.pk, worker="w1", outputs=[{**output, "token_ids": ids, "finish_reason": "stop"}],
                         prompt_tokens=1, completion_tokens=len(ids))
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "done" and done["outputs"][0]["text"] == " born free and "
    assert done["usage"]["completion_tokens"] == len(ids) and done["finished_at"]
    assert_refused(post(client, f"/api/jobs/{job['id']}/cancel", {}), 409, "conflict", "already ended")


@pytest.mark.parametrize("role", ["stranger", "admin", "reviewer_a", "anonymous"])
def test_it_answers_404_for_another_users_job(cast, model, role):
    job, _ = submit(cast.granted, model)
    client = client_for(Client(), cast, role)
    if role == "anonymous":
        assert_refused(client.get(f"/api/jobs/{job.public_id}"), 401, "unauthenticated", "Sign in")
        return
    assert_refused(client.get(f"/api/jobs/{job.public_id}"), 404, "not_found", f"You have no job {job.public_id}")
    assert_refused(post(client, f"/api/jobs/{job.public_id}/cancel", {}), 404, "not_found", "GET /api/jobs lists your jobs")
    assert client.get("/api/jobs").json()["data"] == []
    job.refresh_from_db()
    assert job.status == "queued"


def test_it_takes_a_token_only_with_the_inference_scope(cast, model):
    body = {"model": "test/corpus-a", "prompt": [5, 6, 7], "max_new_tokens": 2}
    _, read_only = access_token_create(user=cast.granted, name="laptop", scopes=["read"], days=30)
    _, inference = access_token_create(user=cast.granted, name="cluster", scopes=["inference"], days=30)
    client = Client()

    assert_refused(post(client, "/api/jobs", body), 401, "unauthenticated", "Authorization: Bearer")
    refused = post(client, "/api/jobs", body, HTTP_AUTHORIZATION=f"Bearer {read_only}")
    assert_refused(refused, 403, "forbidden", "lacks the 'inference' scope")
    bad = post(client, "/api/jobs", body, HTTP_AUTHORIZATION="Bearer rpt_not-a-token")
    assert_refused(bad, 401, "unauthenticated", "not valid")
    assert bad["WWW-Authenticate"] == 'Bearer realm="portal"'
    assert not InferenceJob.objects.exists()

    created = post(client, "/api/jobs", body, HTTP_AUTHORIZATION=f"Bearer {inference}")
    assert created.status_code == 201
    job = InferenceJob.objects.get()
    assert job.params["prompts"] == [[5, 6, 7]] and job.token.name == "cluster" and job.via == "api"
    assert client.get("/api/jobs", HTTP_AUTHORIZATION=f"Bearer {inference}").json()["data"][0]["id"] == job.public_id


def test_it_exempts_only_token_calls_from_the_csrf_check(cast, model):
    browser = client_for(Client(enforce_csrf_checks=True), cast, "granted")
    body = {"model": "test/corpus-a", "prompt": "Hi", "max_new_tokens": 2}
    assert_refused(post(browser, "/api/jobs", body), 403, "csrf", "CSRF token")
    assert not InferenceJob.objects.exists()

    _, raw = access_token_create(user=cast.granted, name="cluster", scopes=["inference"], days=30)
    assert post(Client(enforce_csrf_checks=True), "/api/jobs", body, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 201


def test_it_says_what_to_do_in_every_refusal(cast, model, settings):
    client = client_for(Client(), cast, "granted")
    assert_refused(post(client, "/api/jobs", {"model": "test/corpus-a", "prompt": "Hi", "temperature": -1}),
                   400, "invalid", "temperature must be 0 (greedy) or more")
    assert_refused(post(client, "/api/jobs", {"model": "test/corpus-a", "kind": "train", "prompt": "Hi"}),
                   400, "invalid", "kind must be one of generate, score, inspect")
    assert_refused(client.post("/api/jobs", "{not json", content_type="application/json"), 400, "invalid", "not valid JSON")
    assert_refused(post(client, "/api/jobs", {"model": "test/nothing", "prompt": "Hi"}), 404, "not_found", "GET /api/v1/models")
    refused = client.delete("/api/jobs")
    assert_refused(refused, 405, "method_not_allowed", "use GET or POST")
    assert refused["Allow"] == "GET, POST"
    assert_refused(client.get("/api/jobs?status=lost"), 400, "invalid", "status must be one of")

    pending = client_for(Client(), cast, "pending")
    assert_refused(post(pending, "/api/jobs", {"model": "test/corpus-a", "prompt": "Hi"}), 403, "forbidden", "You may not run test/corpus-a")

    settings.INFERENCE_MAX_CONCURRENT_JOBS = 1
    assert post(client, "/api/jobs", {"model": "test/corpus-a", "prompt": "Hi", "max_new_tokens": 2}).status_code == 201
    limited = post(client, "/api/jobs", {"model": "test/corpus-a", "prompt": "Hello", "max_new_tokens": 2})
    assert_refused(limited, 429, "limit", "INFERENCE_MAX_CONCURRENT_JOBS")
    assert int(limited["Retry-After"]) >= 1


def test_it_runs_score_and_inspect_jobs_too(cast, model):
    client = client_for(Client(), cast, "granted")
    score = post(client, "/api/jobs", {"model": "test/corpus-a", "kind": "score",
                                       "requests": [{"context": "The sky is", "continuation": " blue"}]})
    assert score.status_code == 201 and score.json()["params"]["requests"][0]["continuation"]
    inspect = post(client, "/api/jobs", {"model": "test/corpus-a", "kind": "inspect", "prompt": "Hello world",
                                         "layers": [0, 1], "positions": [-1], "top_k": 3})
    assert inspect.status_code == 201 and inspect.json()["params"]["layers"] == [0, 1]
    assert {j["kind"] for j in client.get("/api/jobs").json()["data"]} == {"score", "inspect"}


def test_it_keeps_the_logprob_of_a_new_token_that_completes_a_character_begun_in_the_prompt(cast, model):
    from inference.formatting import completion_json

    tokenizer = tokenizer_for(model)
    ids = next(tokenizer.encode(word, add_special_tokens=False).ids for word in ("çà", "ü", "€", "語")
               if "\ufffd" in tokenizer.decode(tokenizer.encode(word, add_special_tokens=False).ids[:1]))
    prompt, new = ids[:1], ids[1:2]  # the prompt ends half-way through a character, as a scoring request may
    job = submit(cast.granted, model, via="openai", prompt=prompt, max_new_tokens=1, echo=True, logprobs=1)[0]
    (claimed,) = scheduler.jobs_claim(version_id=model.pk, worker="w1", slots=4, lease_seconds=60)
    scheduler.job_finish(job_id=claimed.pk, worker="w1", outputs=[{
        "token_ids": new, "finish_reason": "length", "token_logprobs": [-0.5], "top_logprobs": [[[new[0], -0.5]]],
        "prompt_logprobs": [None], "prompt_top_logprobs": [None]}], prompt_tokens=1, completion_tokens=1)
    job.refresh_from_db()

    logprobs = completion_json(job, model="test/corpus-a")["choices"][0]["logprobs"]

    assert logprobs["token_logprobs"] == [None, -0.5]  # len(prompt) + 1 entries: lm-evaluation-harness reads the last
