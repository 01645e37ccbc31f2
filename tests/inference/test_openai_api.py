"""The OpenAI-compatible API as the `openai` client sees it: pytest-django's live server, a real Celery
worker process running the inference queue on the test database, the tiny checkpoint published as a
gated checkpoint, and an access token with the `inference` scope as the client's api_key. Outputs are
held against transformers' BLOOM computed in this process on the same fp32 checkpoint."""

from __future__ import annotations

import os
import threading

import openai
import pytest
import requests
import torch

from datasets_app.publishing import version_publish
from datasets_app.tokens import access_token_create
from inference.models import InferenceJob
from inference.tokenizer import tokenizer_for
from tests.conftest import stop_process_group, subprocess_database_url
from tests.inference.conftest_jobs import _own_inference_cache, model  # noqa: F401 (fixtures)
from tests.inference.conftest_runner import runner_model  # noqa: F401 (a fixture)
from tests.test_worker import start_worker, worker_queue  # noqa: F401 (a fixture)

MODEL = "test/corpus-a"
TEXT = "All human beings are"
FRENCH = "Tous les êtres humains"
EOS = 2  # the tiny checkpoint's end-of-sequence token (inference.engine.demo)
WAIT = 180  # seconds a completion waits for its job: a loaded 2-core machine starts a worker slowly


@pytest.fixture
def start_inference_worker(worker_queue, release_storage, tmp_path):  # noqa: F811
    """Starts, when the test asks, one Celery worker serving this test's queue on the test database
    (the messages job_submit sends wait in the broker until then); stopped after the test. Returns
    the path of its log."""
    log = tmp_path / "inference-worker.log"
    started = []

    def start():
        env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "MEDIA_ROOT": str(release_storage),
               "INFERENCE_CACHE_DIR": str(tmp_path / "worker-cache"), "INFERENCE_MEMORY_BUDGET": "1GiB",
               "INFERENCE_MAX_SLOTS": "8", "INFERENCE_IDLE_SECONDS": "1", "PYTHONUNBUFFERED": "1"}
        started.append(start_worker(worker_queue, env, log))
        return log

    yield start
    for process in started:
        stop_process_group(process)


@pytest.fixture
def api(live_server, settings):
    settings.INFERENCE_WAIT_SECONDS = WAIT
    return live_server.url + "/api"


@pytest.fixture
def client_of(api):
    """An openai client for a user, with a new token of `scopes` as its api_key (or `api_key` as given).
    Closed after the test: a kept-alive connection keeps its server thread, and that thread's database
    connection, open."""
    clients = []

    def client_of(user=None, *, scopes=("inference",), api_key: str | None = None) -> openai.OpenAI:
        if api_key is None:
            _, api_key = access_token_create(user=user, name="cluster", scopes=list(scopes), days=30)
        clients.append(openai.OpenAI(base_url=api + "/v1", api_key=api_key, max_retries=0, timeout=WAIT + 60))
        return clients[-1]

    yield client_of
    for client in clients:
        client.close()


def job_of(completion) -> InferenceJob:
    return InferenceJob.objects.get(public_id=completion.id)


def ids_of(version, text: str) -> list[int]:
    return tokenizer_for(version).encode(text, add_special_tokens=False).ids


def reference_logprobs(reference_model, ids: list[int]) -> torch.Tensor:
    """[len(ids), V]: row t is the log-softmax predicting token t + 1."""
    with torch.no_grad():
        return torch.log_softmax(reference_model(torch.tensor([ids])).logits[0].float(), -1)


def reference_greedy(reference_model, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy tokens, ended (and left out) at the end-of-sequence token as the engine does."""
    tokens: list[int] = []
    while len(tokens) < max_new_tokens:
        token = int(reference_logprobs(reference_model, ids + tokens)[-1].argmax())
        if token == EOS:
            break
        tokens.append(token)
    return tokens


def assert_close(actual: list, expected: list, tolerance: float = 1e-4) -> None:
    assert len(actual) == len(expected)
    assert max(abs(a - e) for a, e in zip(actual, expected)) <= tolerance, (actual, expected)


def refusal(error: openai.APIStatusError, status: int, words: str) -> dict:
    """The OpenAI error shape, as the client read it (APIStatusError.body is the "error" object)."""
    assert error.status_code == status, error
    assert set(error.body) == {"message", "type", "code"} and words in error.body["message"], error.body
    assert words in str(error)
    return error.body


def test_it_completes_as_the_reference_model_computes(cast, model, reference_model, client_of, start_inference_worker):
    log = start_inference_worker()
    client = client_of(cast.granted)
    tokenizer = tokenizer_for(model)

    def complete(**fields):
        try:
            return client.completions.create(model=MODEL, **fields)
        except (openai.APIStatusError, openai.APITimeoutError) as error:
            raise AssertionError(f"{error}\nthe worker's log:\n{log.read_text()[-4000:]}") from error

    # A text: the greedy continuation is transformers' greedy tokens.
    prompt = ids_of(model, TEXT)
    expected = reference_greedy(reference_model, prompt, 8)
    one = complete(prompt=TEXT, max_tokens=8)
    assert (one.object, one.model, one.id) == ("text_completion", MODEL, job_of(one).public_id) and one.created > 0
    (choice,) = one.choices
    assert job_of(one).outputs[0]["token_ids"] == expected
    assert choice.index == 0 and choice.text == tokenizer.decode(expected) and choice.logprobs is None
    assert choice.finish_reason == ("length" if len(expected) == 8 else "stop")
    assert (one.usage.prompt_tokens, one.usage.completion_tokens) == (len(prompt), len(expected))
    assert job_of(one).via == "openai" and job_of(one).token.name == "cluster"

    # A list of texts, and a list of token-id lists: one choice per prompt, in order. Token ids are used
    # as given: these spell " human" one character a token, which the tokenizer would make one token.
    split = [tokenizer.token_to_id(c) for c in "Ġhuman"] + ids_of(model, " beings")
    assert tokenizer.encode(tokenizer.decode(split), add_special_tokens=False).ids != split
    for given, prompts in (([TEXT, FRENCH], [prompt, ids_of(model, FRENCH)]), ([split, prompt], [split, prompt])):
        many = complete(prompt=given, max_tokens=6)
        assert [c.index for c in many.choices] == [0, 1]
        assert job_of(many).params["prompts"] == prompts
        assert [o["token_ids"] for o in job_of(many).outputs] == [reference_greedy(reference_model, p, 6) for p in prompts]

    # Token ids, echoed with max_tokens=0: one entry per prompt token, the first null, the others the
    # reference's log-softmax; and top entries from the same computation.
    reference = reference_logprobs(reference_model, split)
    echoed = complete(prompt=split, max_tokens=0, echo=True, logprobs=2)
    (choice,) = echoed.choices
    lp = choice.logprobs
    assert choice.text == tokenizer.decode(split) and choice.finish_reason == "length"
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(split)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert_close(lp.token_logprobs[1:], [float(reference[t - 1, split[t]]) for t in range(1, len(split))])
    for t in range(1, len(split)):
        assert_close(sorted(lp.top_logprobs[t].values(), reverse=True), reference[t - 1].topk(2).values.tolist())
    assert echoed.usage.completion_tokens == 0

    # max_tokens=1 with echo: the prompt's entries and the new token's; a greedy token's log-probability
    # is its top entry exactly, as both come from one log_softmax.
    reference = reference_logprobs(reference_model, prompt)
    (choice,) = complete(prompt=TEXT, max_tokens=1, echo=True, logprobs=1).choices
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(prompt) + 1
    greedy = int(reference[-1].argmax())
    assert lp.tokens[-1] == tokenizer.decode([greedy]) and choice.text == TEXT + lp.tokens[-1]
    assert lp.top_logprobs[-1] == {lp.tokens[-1]: lp.token_logprobs[-1]}
    assert_close(lp.token_logprobs[1:], [float(reference[t - 1, token]) for t, token in enumerate(prompt + [greedy]) if t])
    # The offsets of the text's pieces: the prompt's text starts at 0, each token where the one before ends.
    assert lp.text_offset[0] == 0 and "".join(lp.tokens) == choice.text
    assert all(choice.text[offset:].startswith(token) for offset, token in zip(lp.text_offset, lp.tokens))
    assert [b - a for a, b in zip(lp.text_offset, lp.text_offset[1:])] == [len(token) for token in lp.tokens[:-1]]

    # logprobs 0 to 5: that many top entries per token (none for 0), the greedy token first among them.
    for k in range(6):
        (choice,) = complete(prompt=TEXT, max_tokens=3, logprobs=k).choices
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == len(expected[:3])
        # Without echo the offsets count from the prompt's text, as OpenAI's do.
        assert lp.text_offset[0] == len(TEXT)
        if k == 0:
            assert not any(lp.top_logprobs or [])
            continue
        for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            assert len(top) == k and logprob == top[token] == max(top.values())

    # Stop strings (any number of them): the text ends before the first, finish_reason "stop", and the
    # tokens of the stop string are left out of the log-probabilities too. "ere" spans two tokens here.
    full = tokenizer.decode(reference_greedy(reference_model, prompt, 12))
    stop = full[1:4]
    assert len(full) > 6 and full.find(stop) >= 1
    stops = ["never seen 1", stop, "never seen 2", "never seen 3", "never seen 4", "never seen 5"]
    (choice,) = complete(prompt=TEXT, max_tokens=12, stop=stops, logprobs=1).choices
    assert (choice.text, choice.finish_reason) == (full[:full.find(stop)], "stop")
    assert all(offset < len(TEXT) + len(choice.text) for offset in choice.logprobs.text_offset)

    # Fields other clients send and this API does not read are ignored.
    extra = complete(prompt=TEXT, max_tokens=8, n=1, best_of=1, user="eval-run-7", presence_penalty=0.0,
                     frequency_penalty=0.0, logit_bias=None, extra_body={"min_tokens": 2, "top_k": 3})
    assert extra.choices[0].text == one.choices[0].text and job_of(extra).params == job_of(one).params

    # Sampling with a seed is reproducible: the same seed, the same text, in two jobs.
    sampled = [complete(prompt=FRENCH, max_tokens=12, temperature=0.9, seed=1234) for _ in range(2)]
    assert sampled[0].choices[0].text == sampled[1].choices[0].text and sampled[0].id != sampled[1].id
    assert job_of(sampled[0]).params["temperature"] == 0.9


def test_it_refuses_in_the_openai_error_shape_with_what_to_do(cast, model, client_of, settings, worker_queue):  # noqa: F811
    # No worker: a job stays queued, which the limits count.
    client = client_of(cast.granted)

    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=MODEL, prompt=TEXT, n=2)
    refusal(refused.value, 400, "n must be 1")
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=MODEL, prompt=TEXT, stream=True)
    refusal(refused.value, 400, "stream is not supported")
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=MODEL, prompt=TEXT, max_tokens=0)
    refusal(refused.value, 400, "set echo")
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=MODEL, prompt=TEXT, logprobs=6)
    refusal(refused.value, 400, "logprobs must be at most 5")
    with pytest.raises(openai.NotFoundError) as refused:
        client.completions.create(model="test/nothing", prompt=TEXT)
    refusal(refused.value, 404, "GET /api/v1/models")
    for role in ("stranger", "pending", "revoked"):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client_of(cast.users[role]).completions.create(model=MODEL, prompt=TEXT)
        refusal(refused.value, 403, f"You may not run {MODEL}")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client_of(cast.granted, scopes=["read"]).completions.create(model=MODEL, prompt=TEXT)
    refusal(refused.value, 403, "lacks the 'inference' scope")
    with pytest.raises(openai.AuthenticationError) as refused:
        client_of(api_key="rpt_not-a-token").completions.create(model=MODEL, prompt=TEXT)
    assert refused.value.status_code == 401
    assert not InferenceJob.objects.exists()

    # A job still queued when the wait ends: 503 with Retry-After, and the same request again joins it.
    settings.INFERENCE_WAIT_SECONDS = 1
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as refused:
            client.completions.create(model=MODEL, prompt=TEXT, max_tokens=16)
        job = InferenceJob.objects.get()
        refusal(refused.value, 503, f"Job {job.public_id} is still queued")
        assert "send the same request again" in refused.value.body["message"]
        assert refused.value.response.headers["Retry-After"] == "1"

    # Limits: 429 with Retry-After and the setting's name; the retry of a job already queued is no new
    # job, so the limit its own job reaches does not refuse it.
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 1
    with pytest.raises(openai.InternalServerError) as refused:
        client.completions.create(model=MODEL, prompt=TEXT, max_tokens=16)
    refusal(refused.value, 503, f"Job {job.public_id} is still queued")
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model=MODEL, prompt=FRENCH, max_tokens=16)
    refusal(refused.value, 429, "INFERENCE_MAX_CONCURRENT_JOBS")
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    settings.INFERENCE_MAX_CONCURRENT_JOBS = 8
    settings.INFERENCE_TOKENS_PER_DAY = job.prompt_tokens + 16 + 10  # the queued job reserves its new tokens
    with pytest.raises(openai.RateLimitError) as refused:
        client.completions.create(model=MODEL, prompt=FRENCH, max_tokens=16)
    refusal(refused.value, 429, "INFERENCE_TOKENS_PER_DAY")
    assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 24 * 3600 + 1
    assert InferenceJob.objects.count() == 1


def test_it_lists_the_models_and_tokenizer_the_caller_may_use(cast, model, runner_model, api, client_of, tiny_checkpoint):  # noqa: F811
    # Three checkpoints: the granted researcher's (corpus-a), one nobody here is granted (tiny-lm), and an open one.
    opened = version_publish(resource=cast.open_resource, name="v1", source=str(tiny_checkpoint), actor=cast.admin)
    listed = {m.id: m for m in client_of(cast.granted).models.list()}
    assert set(listed) == {MODEL, "test/tokenizer"}
    assert (listed[MODEL].object, listed[MODEL].owned_by, listed[MODEL].version, listed[MODEL].revision) == (
        "model", "test", "v1", model.revision)
    assert {m.id for m in client_of(cast.stranger).models.list()} == {opened.resource.repo_id}

    # The tokenizer endpoints lm-evaluation-harness's remote tokenizer calls, over plain HTTP.
    _, raw = access_token_create(user=cast.granted, name="harness", scopes=["inference"], days=30)
    with requests.Session() as http:  # closed: see client_of
        http.headers["Authorization"] = f"Bearer {raw}"
        info = http.get(f"{api}/tokenizer_info", params={"model": MODEL}, timeout=60)
        assert info.status_code == 200, info.text
        assert info.json() == {"eos_token": "</s>", "bos_token": "<s>", "pad_token": "<pad>", "model": MODEL, "max_model_len": 2048}
        # Naming no model is fine while the usable checkpoints share one tokenizer.
        assert http.get(f"{api}/tokenizer_info", timeout=60).json()["eos_token"] == "</s>"
        text = "Tous les êtres humains naissent libres. 人人生而自由"
        tokens = http.post(f"{api}/tokenize", json={"prompt": text, "model": MODEL}, timeout=60).json()
        assert tokens["tokens"] == ids_of(model, text) and tokens["count"] == len(tokens["tokens"])
        assert http.post(f"{api}/detokenize", json={"tokens": tokens["tokens"]}, timeout=60).json() == {"prompt": text}
        bad = http.post(f"{api}/detokenize", json={"tokens": [1, 10**6]}, timeout=60)
        assert bad.status_code == 400 and "outside the vocabulary" in bad.json()["error"]["message"]
    refused = requests.get(f"{api}/tokenizer_info", params={"model": "test/tiny-lm"}, timeout=60,
                           headers={"Authorization": f"Bearer {raw}"})
    assert refused.status_code == 403 and refused.headers["X-Error-Code"] == "forbidden"


def test_it_joins_a_retried_identical_request_to_the_job_already_running(cast, model, reference_model, client_of, settings,
                                                                        start_inference_worker):
    client = client_of(cast.granted)
    body = {"model": MODEL, "prompt": TEXT, "max_tokens": 24}
    # The first call gives up before any worker runs its job.
    settings.INFERENCE_WAIT_SECONDS = 1
    with pytest.raises(openai.InternalServerError):
        client.completions.create(**body)
    (job,) = InferenceJob.objects.all()

    # Two identical calls at once, then a worker: both are answered from that one job.
    settings.INFERENCE_WAIT_SECONDS = WAIT
    answers, barrier = [None, None], threading.Barrier(2)

    def call(n):
        barrier.wait()
        try:
            answers[n] = client.completions.create(**body)
        except Exception as error:  # reported below, with the worker's log
            answers[n] = error

    callers = [threading.Thread(target=call, args=(n,)) for n in range(2)]
    for caller in callers:
        caller.start()
    log = start_inference_worker()
    for caller in callers:
        caller.join(timeout=WAIT + 90)
    assert all(hasattr(answer, "choices") for answer in answers), f"{answers}\n{log.read_text()[-4000:]}"
    assert [answer.id for answer in answers] == [job.public_id] * 2
    assert InferenceJob.objects.count() == 1
    expected = reference_greedy(reference_model, ids_of(model, TEXT), 24)
    assert answers[0].choices[0].text == answers[1].choices[0].text == tokenizer_for(model).decode(expected)
