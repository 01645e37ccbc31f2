"""The playground: the form, the user's own jobs, and each job's output text as the worker writes it."""

from __future__ import annotations

import os

import pytest
from django.test import Client
from django.urls import reverse

from datasets_app.models import Resource
from datasets_app.publishing import version_publish
from inference import scheduler
from inference.models import InferenceJob
from inference.tokenizer import tokenizer_for
from tests.conftest import apply, client_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_checkpoint_files(tmp_path_factory):
    from inference.engine.demo import make_demo_checkpoint

    return make_demo_checkpoint(tmp_path_factory.mktemp("playground") / "tiny", shape="tiny", dtype="fp32", seed=3)


def publish_tiny_model(cast, files):
    """A checkpoint resource (approved on every complete request) with the tiny checkpoint published,
    and the granted researcher's grant on it."""
    model = Resource.objects.create(namespace="test", slug="tiny-model", kind=Resource.Kind.CHECKPOINT, title="Tiny model",
                                    access_policy=Resource.Policy.GATED_AUTO, license_version=cast.license_version,
                                    default_grant_days=30)
    version = version_publish(resource=model, name="v1", source=str(files), actor=cast.admin)
    apply(cast.granted, model)
    return version


@pytest.fixture
def tiny_model(cast, release_storage, settings, tmp_path, tiny_checkpoint_files):
    settings.INFERENCE_CACHE_DIR = str(tmp_path / "inference-cache")
    return publish_tiny_model(cast, tiny_checkpoint_files)


def submit(client, version, **fields):
    form = {"model": f"{version.resource.repo_id}@{version.name}", "kind": "generate", "prompt": "All human beings are", "max_new_tokens": 8,
            "temperature": 0, "top_p": 1, "seed": "", "stop": "", "continuation": "", "layers": "", "positions": "-1", "top_k": 5}
    return client.post(reverse("playground"), {**form, **fields})


def test_it_queues_a_granted_researchers_generation_and_lists_it_with_its_queue_position(cast, tiny_model):
    client = client_for(Client(), cast, "granted")
    page = client.get(reverse("playground")).content.decode()
    assert "test/tiny-model (v1)" in page

    response = submit(client, tiny_model)
    assert response.status_code == 302 and response["Location"] == reverse("playground")
    job = InferenceJob.objects.get(user=cast.granted)
    assert (job.status, job.via, job.kind, job.version) == ("queued", "playground", "generate", tiny_model)
    # Tokenized on the web side with the checkpoint's tokenizer, nothing prepended.
    assert job.params["prompts"] == [tokenizer_for(tiny_model).encode("All human beings are", add_special_tokens=False).ids]

    page = client.get(reverse("playground")).content.decode()
    assert job.public_id in page and "position 1 in the queue" in page and "All human beings are" in page
    state = client.get(reverse("playground_job", args=[job.public_id])).json()
    assert (state["status"], state["queue_position"], state["finished"]) == ("queued", 1, False)


def test_it_shows_the_output_text_growing_as_the_worker_writes_it_cut_at_the_stop_string(cast, tiny_model):
    client = client_for(Client(), cast, "granted")
    submit(client, tiny_model, stop="equal")
    job = InferenceJob.objects.get(user=cast.granted)
    (claimed,) = scheduler.jobs_claim(version_id=tiny_model.pk, worker="w1", slots=4, lease_seconds=60)
    ids = tokenizer_for(tiny_model).encode(" born free and equal in dignity", add_special_tokens=False).ids
    url = reverse("playground_job", args=[job.public_id])

    scheduler.job_progress(job_id=claimed.pk, worker="w1", completion_tokens=2, first_token=True,
                           outputs=[{"token_ids": ids[:2], "finish_reason": None, "token_logprobs": [-1.0, -1.0],
                                     "top_logprobs": None, "prompt_logprobs": None, "prompt_top_logprobs": None}])
    early = client.get(url).json()
    assert early["status"] == "running" and early["outputs"][0]["text"] == tokenizer_for(tiny_model).decode(ids[:2])

    scheduler.job_finish(job_id=claimed.pk, worker="w1", prompt_tokens=len(job.params["prompts"][0]), completion_tokens=len(ids),
                         outputs=[{"token_ids": ids, "finish_reason": "stop", "token_logprobs": [-1.0] * len(ids),
                                   "top_logprobs": None, "prompt_logprobs": None, "prompt_top_logprobs": None}])
    done = client.get(url).json()
    assert done["finished"] and done["status"] == "done"
    assert done["outputs"][0] == {"text": " born free and ", "finish_reason": "stop"}


def test_it_shows_a_scoring_jobs_log_probabilities_with_its_continuation(cast, tiny_model):
    client = client_for(Client(), cast, "granted")
    submit(client, tiny_model, kind="score", prompt="All human beings are", continuation=" born free")
    job = InferenceJob.objects.get(user=cast.granted)
    continuation = job.params["requests"][0]["continuation"]
    assert job.kind == "score" and tokenizer_for(tiny_model).decode(continuation) == " born free"
    (claimed,) = scheduler.jobs_claim(version_id=tiny_model.pk, worker="w1", slots=4, lease_seconds=60)
    logprobs = [-2.5, -0.25, -1.0][:len(continuation)]
    scheduler.job_finish(job_id=claimed.pk, worker="w1", prompt_tokens=claimed.prompt_tokens, completion_tokens=0,
                         outputs=[{"token_logprobs": logprobs, "sum": sum(logprobs), "is_greedy": False}])
    text = client.get(reverse("playground_job", args=[job.public_id])).json()["outputs"][0]["text"]
    assert text.startswith(f"' born free' after the prompt: log-probability {sum(logprobs):.4f} (not the greedy continuation)")
    assert "-2.500" in text


def test_it_shows_a_researcher_without_a_grant_where_to_ask_and_refuses_their_post(cast, tiny_model):
    client = client_for(Client(), cast, "stranger")
    page = client.get(reverse("playground")).content.decode()
    assert "None of the checkpoints is open to you yet" in page and "test/tiny-model" not in page
    response = submit(client, tiny_model)
    refusal = response.content.decode()
    assert response.status_code == 200 and "You may not run test/tiny-model" in refusal and "/resources/test/tiny-model/request" in refusal
    assert not InferenceJob.objects.exists()


def test_it_keeps_a_job_from_everyone_but_its_owner(cast, tiny_model):
    submit(client_for(Client(), cast, "granted"), tiny_model)
    job = InferenceJob.objects.get()
    for role in ("stranger", "admin"):
        other = client_for(Client(), cast, role)
        assert other.get(reverse("playground_job", args=[job.public_id])).status_code == 404
        assert other.post(reverse("playground_job_cancel", args=[job.public_id])).status_code == 404
        assert job.public_id not in other.get(reverse("playground")).content.decode()
    job.refresh_from_db()
    assert job.status == "queued"


def test_it_cancels_a_queued_job_from_its_cancel_button(cast, tiny_model):
    client = client_for(Client(), cast, "granted")
    submit(client, tiny_model)
    job = InferenceJob.objects.get()
    response = client.post(reverse("playground_job_cancel", args=[job.public_id]), follow=True)
    assert f"Job {job.public_id} is cancelled." in response.content.decode()
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert client.get(reverse("playground_job", args=[job.public_id])).json()["finished"] is True
