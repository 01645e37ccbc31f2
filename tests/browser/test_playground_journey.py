"""A researcher's first job in the playground: submitted in the browser, queued, then run by a real
Celery worker on the inference runner, its output appearing in the page as it is generated."""

from __future__ import annotations

import os
import re
import time

from inference.models import InferenceJob
from tests.browser.conftest import sign_in
from tests.conftest import stop_process_group, subprocess_database_url
from tests.inference.test_playground import publish_tiny_model, tiny_checkpoint_files  # noqa: F401 (a fixture)
from tests.test_worker import start_worker, worker_queue  # noqa: F401 (a fixture)

NEW_TOKENS = 300  # enough passes for several polls of the page to see the text half-way


def test_it_shows_a_generation_appearing_in_the_playground_without_reloading(
        cast, release_storage, tmp_path, tiny_checkpoint_files, worker_queue, new_page, shot):  # noqa: F811
    version = publish_tiny_model(cast, tiny_checkpoint_files)
    page = new_page()
    sign_in(page, "granted")
    page.click("header nav >> text=Playground")
    page.wait_for_url(re.compile(r"/playground/$"))
    page.select_option("#id_model", label="test/tiny-model (v1)")
    page.fill("#id_prompt", "All human beings are born free")
    page.fill("#id_max_new_tokens", str(NEW_TOKENS))
    shot(page, "playground-01-form")
    page.click("#playground-form button[type=submit]")

    # No worker yet: the job waits in the queue, and the page says where.
    job = page.locator(".job").first
    assert job.locator(".status").inner_text() == "queued"
    assert job.locator(".queue").inner_text() == "position 1 in the queue"
    shot(page, "playground-02-queued")
    page.evaluate("window.stillTheSamePage = true")

    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "MEDIA_ROOT": str(release_storage),
           "INFERENCE_CACHE_DIR": str(tmp_path / "inference-cache"), "INFERENCE_IDLE_SECONDS": "1", "PYTHONUNBUFFERED": "1"}
    worker = start_worker(worker_queue, env, tmp_path / "worker.log")
    try:
        # What the page shows, sampled while the worker generates: the text only ever grows.
        seen = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status, text = job.locator(".status").inner_text(), job.locator(".output").inner_text()
            if text and (not seen or seen[-1] != (status, text)):
                seen.append((status, text))
                if len(seen) == 2:
                    shot(page, "playground-03-generating")
            if status == "done":
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no finished output after 90 s; the page showed {seen[-1:]}\n"
                                 + (tmp_path / "worker.log").read_text()[-3000:])
    finally:
        stop_process_group(worker)
    shot(page, "playground-04-done")

    stored = InferenceJob.objects.get(user=cast.granted)
    assert stored.status == "done" and stored.version == version and stored.via == "playground"
    assert page.evaluate("window.stillTheSamePage") is True  # the output came without a reload
    partial = [text for status, text in seen if status == "running"]
    assert partial, f"the output appeared only once finished: {seen}"
    # A character split across tokens shows as U+FFFD until its last byte comes.
    texts = [text.rstrip("\ufffd") for _, text in seen]
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:])), seen
    assert seen[-1][0] == "done" and job.locator(".tokens").inner_text() == f"{stored.completion_tokens} tokens generated"
    assert job.locator(".cancel").count() == 0  # a finished job has nothing to cancel
