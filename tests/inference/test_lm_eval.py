"""lm-evaluation-harness, unchanged, against the live portal: its `local-completions` model (the
OpenAI-compatible completions, with the portal's own tokenizer endpoints instead of a tokenizer
downloaded from a hub) on two small UDHR tasks of ours (tests/inference/udhr_task.py), held against its
`hf` model on the same fp32 checkpoint read from disk. A real Celery worker runs the jobs on the test
database."""

from __future__ import annotations

import gc

from django.core.signals import request_started

from datasets_app.tokens import access_token_create
from inference.models import InferenceJob
from inference.tokenizer import tokenizer_for
from tests.inference.conftest_jobs import _own_inference_cache, model  # noqa: F401 (fixtures)
from tests.inference.test_openai_api import (  # noqa: F401 (fixtures)
    MODEL, WAIT, api, ids_of, reference_greedy, start_inference_worker,
)
from tests.inference.udhr_task import ARTICLES, CHOICES, LANGUAGES, write_udhr_tasks
from tests.test_worker import worker_queue  # noqa: F401 (a fixture)

BATCH = 16  # prompts per completion request: one job each


def evaluate(model_name: str, model_args: str, tasks: list[str], folder) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=model_name, model_args=model_args, tasks=tasks, batch_size=BATCH,
                                   task_manager=TaskManager(include_path=str(folder)), log_samples=True,
                                   bootstrap_iters=0)


def scores(results: dict) -> dict:
    """(task, doc id) -> (the requests' arguments, [(log-likelihood, is_greedy) per request], acc)."""
    return {(task, sample["doc_id"]): (sample["arguments"], [tuple(resp[0]) for resp in sample["resps"]], sample["acc"])
            for task, samples in results["samples"].items() for sample in samples}


def test_it_evaluates_through_the_portal_as_the_hf_model_does_on_the_same_checkpoint(
        cast, model, api, start_inference_worker, reference_model, tiny_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    folder = tmp_path / "tasks"
    tokenizer = tokenizer_for(model)
    # Half the continuations of the next-text task are the model's own greedy ones (is_greedy true).
    tasks = write_udhr_tasks(folder, greedy=lambda context: tokenizer.decode(
        reference_greedy(reference_model, ids_of(model, context), 3)))
    _, raw = access_token_create(user=cast.granted, name="harness", scopes=["inference"], days=30)
    # local-completions sends OPENAI_API_KEY with its completions, and auth_token with its tokenizer calls.
    monkeypatch.setenv("OPENAI_API_KEY", raw)
    paths = []

    def record(sender, environ, **kwargs):
        paths.append(environ["PATH_INFO"])

    log = start_inference_worker()
    request_started.connect(record)  # the live server's threads are in this process
    try:
        remote = evaluate("local-completions", f"model={MODEL},base_url={api}/v1/completions,tokenizer_backend=remote,"
                                               f"auth_token={raw},num_concurrent=2,max_retries=3,max_length=2048,"
                                               f"timeout={WAIT + 60}", tasks, folder)
    except Exception as error:
        raise AssertionError(f"{error!r}\nthe worker's log:\n{log.read_text()[-4000:]}") from error
    finally:
        request_started.disconnect(record)
        # The harness's remote tokenizer keeps its HTTP connection open (a requests.Session in a reference
        # cycle); the live server's thread serving it would hold a database connection to the end.
        gc.collect()
    local = evaluate("hf", f"pretrained={tiny_checkpoint},dtype=float32,device=cpu", tasks, folder)

    # The tokenizer was the portal's (HF_HUB_OFFLINE=1 would have failed a download anyway).
    assert {"/api/tokenizer_info", "/api/tokenize", "/api/v1/completions"} <= set(paths), paths
    # Every log-likelihood request went out once, in jobs of BATCH prompts as local-completions asks them.
    remote_scores, local_scores = scores(remote), scores(local)
    requests = sum(len(choices) for _, choices, _ in remote_scores.values())
    jobs = InferenceJob.objects.filter(user=cast.granted, via="openai")
    assert {(job.status, job.params["echo"], job.params["max_new_tokens"], job.params["logprobs"]) for job in jobs} == {
        ("done", True, 1, 1)}
    docs = len(LANGUAGES) * len(ARTICLES)
    assert sum(len(job.params["prompts"]) for job in jobs) == requests == docs * CHOICES + docs
    assert jobs.count() == -(-requests // BATCH)

    assert remote_scores.keys() == local_scores.keys() and len(remote_scores) == 2 * docs
    for key, (arguments, choices, acc) in remote_scores.items():
        local_arguments, local_choices, local_acc = local_scores[key]
        assert arguments == local_arguments
        for (loglikelihood, greedy), (local_loglikelihood, local_greedy) in zip(choices, local_choices, strict=True):
            assert abs(loglikelihood - local_loglikelihood) <= 1e-4, (key, choices, local_choices)
            assert greedy == local_greedy, (key, choices, local_choices)
        assert acc == local_acc, key
    greedy_flags = [greedy for (task, _), (_, choices, _) in remote_scores.items() if task == tasks[1] for _, greedy in choices]
    assert 0 < sum(greedy_flags) < len(greedy_flags)  # both answers met, so the flags were compared both ways
    for task, metric in ((tasks[0], "acc,none"), (tasks[0], "acc_norm,none"), (tasks[1], "acc,none")):
        assert remote["results"][task][metric] == local["results"][task][metric]
