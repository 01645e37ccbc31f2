"""A published checkpoint version as a folder the engine opens: in place for local storage, downloaded
once and sha256-checked for S3 (moto's server over real HTTP)."""

from __future__ import annotations

import logging
import os

import pytest

from datasets_app.models import File, Resource
from datasets_app.publishing import version_publish
from inference.engine.checkpoint import Checkpoint
from inference.errors import JobError
from inference.materialize import checkpoint_dir, version_file
from tests.inference.conftest_jobs import _own_inference_cache, model  # noqa: F401 (fixtures)


def greedy(folder, prompt="Hello") -> list[int]:
    from inference.engine import Engine

    with Engine(folder, memory_budget="1GiB", max_batch_size=1, max_seq_len=64) as engine:
        return engine.generate([prompt], max_new_tokens=6).completions[0].token_ids


def test_it_gives_the_engine_the_published_files_in_place(model, tiny_checkpoint, release_storage, settings):
    folder = checkpoint_dir(model)
    files = File.objects.filter(version=model)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(f.path for f in files)
    # Nothing copied: every file is the content-addressed object of the release storage.
    for file in files:
        assert (folder / file.path).resolve() == (release_storage / file.storage_key).resolve()
    assert Checkpoint.open(folder).config.vocab_size == Checkpoint.open(tiny_checkpoint).config.vocab_size
    assert greedy(folder) == greedy(tiny_checkpoint)
    assert checkpoint_dir(model) == folder  # built once, found again
    assert version_file(model, "tokenizer.json").read_bytes() == (tiny_checkpoint / "tokenizer.json").read_bytes()


def test_it_refuses_an_unpublished_version(model, cast):
    draft = model.resource.versions.create(name="draft")
    with pytest.raises(JobError, match="is not published"):
        checkpoint_dir(draft)


@pytest.fixture
def s3_model(cast, s3, tiny_checkpoint):
    Resource.objects.filter(pk=cast.resource_a.pk).update(kind=Resource.Kind.CHECKPOINT)
    cast.resource_a.refresh_from_db()
    return version_publish(resource=cast.resource_a, name="v1", source=str(tiny_checkpoint), actor=cast.admin)


def test_it_downloads_an_s3_checkpoint_once_and_replaces_a_tampered_copy(s3_model, tiny_checkpoint, settings, caplog):
    folder = checkpoint_dir(s3_model)
    assert str(folder).startswith(settings.INFERENCE_CACHE_DIR)
    assert greedy(folder) == greedy(tiny_checkpoint)
    weights = File.objects.filter(version=s3_model, path__endswith=".safetensors").order_by("path").first()
    cached = (folder / weights.path).resolve()
    assert str(cached).startswith(settings.INFERENCE_CACHE_DIR) and cached.read_bytes() == (tiny_checkpoint / weights.path).read_bytes()
    # Someone changes a byte of the cached copy: the next load notices and fetches the object again.
    os.chmod(cached, 0o644)
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0xFF
    cached.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="inference.materialize"):
        assert checkpoint_dir(s3_model) == folder
    assert "does not match its sha256: downloading it again" in caplog.text
    assert (folder / weights.path).read_bytes() == (tiny_checkpoint / weights.path).read_bytes()


def test_it_refuses_a_damaged_object_in_s3(s3_model, s3):
    weights = File.objects.filter(version=s3_model, path__endswith=".safetensors").order_by("path").first()
    s3.client.put_object(Bucket=s3.bucket, Key=weights.storage_key, Body=b"not the weights")
    with pytest.raises(JobError, match="does not match its sha256 \\(the release storage is damaged\\)"):
        checkpoint_dir(s3_model)
