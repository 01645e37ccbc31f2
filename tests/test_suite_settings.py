"""The whole suite, and every process it starts, hashes passwords with the fast test hasher."""

import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth.hashers import make_password

ROOT = Path(__file__).resolve().parents[1]
FAST = "django.contrib.auth.hashers.MD5PasswordHasher"


def test_it_hashes_fast_in_every_test_folder():
    assert settings.PASSWORD_HASHERS == [FAST]
    started = time.perf_counter()
    make_password("correct-horse-battery-staple")
    assert time.perf_counter() - started < 0.05


def test_it_hashes_fast_in_the_processes_tests_start():
    # Workers, gunicorn and manage.py get the environment the tests run in, as tests/test_worker.py starts them.
    shown = subprocess.run([sys.executable, "manage.py", "shell", "-c", "from django.conf import settings; print(settings.PASSWORD_HASHERS)"],
                           cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == str([FAST])
