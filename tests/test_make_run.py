"""`make run` as a supervisor runs it: started in a session of its own, the research API answering
at once on the demo checkpoint, stopped by one SIGTERM to its process group (right after its worker
ran an inference job), with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
# What moves the portal off the embedded default; `make run` here must not touch the suite's database or broker.
ELSEWHERE = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "EMAIL_HOST", "EMAIL_BACKEND", "S3_BUCKET", "MEDIA_ROOT", "SECRET_KEY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, including those that started a session of their own."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def demo_completion(port: int, env: dict) -> dict:
    """A completion of the demo researcher on the demo checkpoint, through a token of theirs, as a script would ask it."""
    create = ("from django.contrib.auth import get_user_model; from datasets_app.tokens import access_token_create; "
              "print(access_token_create(user=get_user_model().objects.get(username='researcher'), name='make run test', "
              "scopes=['inference'], days=1)[1])")
    token = subprocess.run([sys.executable, "manage.py", "shell", "-c", create], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True).stdout.split()[-1]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/completions", method="POST", data=json.dumps(
        {"model": "bigscience/polyglot-176b", "prompt": "All human beings are", "max_tokens": 4}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=180) as response:
        return json.load(response)


def test_it_stops_everything_make_run_started_on_one_sigterm_to_its_group(tmp_path):
    port = free_port()
    shared = tmp_path / "shared"  # no corpus: the demo skips its long build
    shared.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ELSEWHERE and not k.startswith(("S3_", "EMAIL_"))}
    env.update(PORTAL_VAR_DIR=str(tmp_path / "var"), SHARED_DIR=str(shared), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "make-run.log"
    with open(log_path, "w") as log:
        make = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (answers(f"http://127.0.0.1:{port}/") and " ready." in log_path.read_text()
                                                    and "beat: Starting" in log_path.read_text()):
            assert make.poll() is None, "make run stopped by itself:\n" + log_path.read_text()
            time.sleep(0.5)
        assert answers(f"http://127.0.0.1:{port}/"), "the portal never answered:\n" + log_path.read_text()
        # Links in what the portal says point at this server, not at the default port.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/models", timeout=10)
        except urllib.error.HTTPError as refused:
            assert refused.code == 401 and f"http://127.0.0.1:{port}/" in json.load(refused)["error"]["message"]
        else:
            raise AssertionError("/api/v1/models answered a caller with no token")
        completion = demo_completion(port, env)
        assert completion["object"] == "text_completion" and completion["choices"][0]["finish_reason"] == "length", completion
        assert completion["usage"]["completion_tokens"] == 4, completion
        started = descendants(make.pid) | {make.pid}
        assert len(started) >= 6, started  # make, its shell, the server, beat, the worker and its pool

        began = time.monotonic()
        os.killpg(make.pid, signal.SIGTERM)
        while time.monotonic() - began < 15 and (make.poll() is None or any(alive(pid) for pid in started)):
            time.sleep(0.1)
        took = time.monotonic() - began
        left = [pid for pid in started if alive(pid)]
        assert not left and make.poll() is not None, f"still running after {took:.1f} s: {left}\n" + log_path.read_text()[-3000:]
        assert took < 10, f"stopping took {took:.1f} s"
    finally:
        for pid in descendants(make.pid) | {make.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        make.wait(timeout=10)

    # The worker `make run` starts consumes every queue a task is routed to.
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {"celery"}
    consumed = {line.split()[1] for line in log_path.read_text().splitlines() if line.lstrip().startswith(".> ")}
    assert routed <= consumed, routed - consumed
