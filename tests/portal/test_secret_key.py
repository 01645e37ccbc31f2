"""The embedded default signs with a random key of its own, never with one from the repository."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from django.test import override_settings

from datasets_app import links
from tests.conftest import client_for
from tests.datasets_app.downloads import file_of

ROOT = Path(__file__).resolve().parents[2]
# The key every checkout used to share, before the embedded default made its own.
OLD_EMBEDDED_KEY = "django-insecure-embedded-default-do-not-use-in-production"
PRINT_KEY = "from django.conf import settings; print(settings.SECRET_KEY)"


def start(var_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.Popen([sys.executable, "manage.py", "shell", "-c", PRINT_KEY], cwd=ROOT, text=True,
                            env={**env, "PORTAL_VAR_DIR": str(var_dir)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def key_of(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out.strip().splitlines()[-1]


def test_it_makes_a_random_private_key_on_first_start_and_keeps_it(tmp_path):
    # Four processes starting at once on a fresh folder (a web server, workers, beat) agree on one key.
    keys = {key_of(p) for p in [start(tmp_path) for _ in range(4)]}
    assert len(keys) == 1
    key = keys.pop()
    assert len(key) >= 50 and key != OLD_EMBEDDED_KEY

    stored = tmp_path / "secret_key"
    assert stored.read_text().strip() == key
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".secret_key")] == []  # no temporary left

    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        path = ROOT / name
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"the key is written in {name}"

    assert key_of(start(tmp_path)) == key  # a second start reuses it
    assert key_of(start(tmp_path / "another")) != key  # another installation has its own


def test_it_refuses_a_link_signed_with_the_old_embedded_key(cast, published, client):
    file = file_of(published, "README.md")
    good = links.link_path(file=file, user=cast.granted, grant=cast.grants["granted"])
    with override_settings(SECRET_KEY=OLD_EMBEDDED_KEY):
        forged = links.link_path(file=file, user=cast.granted, grant=cast.grants["granted"])
    assert forged != good

    client_for(client, cast, "granted")
    assert client.get(good).status_code == 200
    refused = client.get(forged)
    assert refused.status_code == 403
    assert b"not valid" in refused.content


def test_it_refuses_to_start_on_an_emptied_key_file(tmp_path):
    (tmp_path / "secret_key").write_text("\n")  # e.g. truncated by a full disk
    process = start(tmp_path)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "holds no usable secret key: delete it and start again" in err
