import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

from datasets_app.authz import can_download
from datasets_app.models import Resource, Version
from inference.services import usable_checkpoints
from portal.audit import audit_verify
from portal.management.commands.load_demo import PASSWORDS


def test_it_loads_a_usable_demo_twice_without_duplicates(db, release_storage, capsys, settings, tmp_path):
    settings.DEBUG = True  # as `make run` runs it (the test runner turns DEBUG off)
    settings.VAR_DIR = tmp_path  # where the trained demo model is kept
    call_command("load_demo", train_seconds=2)  # `make run` trains for a minute; a demo model is a demo model
    call_command("load_demo", train_seconds=2)
    out = capsys.readouterr().out
    assert out.count("Training the demo model") == 1, out
    assert "admin / admin-demo-pass" in out and "researcher / researcher-demo-pass" in out

    assert authenticate(username="admin", password=PASSWORDS["admin"]).is_superuser
    researcher = authenticate(username="researcher", password=PASSWORDS["researcher"])
    assert researcher.profile.is_complete
    assert Resource.objects.count() == 3
    assert list(Version.objects.order_by("resource__slug", "name").values_list("resource__slug", "name", "status")) == [
        ("polyglot-176b", "demo-small-udhr", "published"), ("roots-udhr", "v1.0", "published"), ("roots-udhr", "v2.0", "published"),
        ("tokenizer", "v1.0", "published"),
    ]
    # v2.0 is built from the real corpus: one config per language.
    built = Version.objects.get(name="v2.0")
    assert built.build.status == "succeeded" and built.files.values("config").distinct().count() > 400
    corpus = Resource.objects.get(slug="roots-udhr")
    assert can_download(researcher, corpus).code == "request_required"  # the demo starts with a request to make
    assert can_download(researcher, Resource.objects.get(slug="tokenizer")).allowed
    # The demo checkpoint is ready for the playground: the engine's files, and the researcher may use it.
    model = Resource.objects.get(slug="polyglot-176b")
    checkpoint = model.versions.get(name="demo-small-udhr")
    assert {"config.json", "tokenizer.json", "model.safetensors.index.json", "training.json"} <= set(
        checkpoint.files.values_list("path", flat=True))
    assert "trained for" in checkpoint.changelog and "24 languages" in checkpoint.changelog
    assert can_download(researcher, model).allowed and model.grants.filter(user=researcher).count() == 1
    assert usable_checkpoints(researcher) == [checkpoint]  # what the playground offers them
    assert audit_verify()[1] is None


def test_it_reuses_the_trained_demo_model_it_kept_in_var(settings, tmp_path, capsys):
    from portal.management.commands.load_demo import Command
    from portal.shared import udhr_corpus

    try:
        corpus = udhr_corpus()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    settings.VAR_DIR = tmp_path
    command = Command()
    first = command._trained_checkpoint(corpus, 1)
    again = command._trained_checkpoint(corpus, 1)
    out = capsys.readouterr().out
    assert first == again == tmp_path / "demo-checkpoints" / "small-udhr-1s" and (first / "training.json").is_file()
    assert out.count("Training the demo model") == 1 and "Reusing the trained demo model" in out


def test_it_publishes_random_weights_when_the_corpus_is_not_there(db, release_storage, capsys, settings, tmp_path, monkeypatch):
    settings.DEBUG = True
    monkeypatch.setenv("SHARED_DIR", str(tmp_path))  # no corpora here
    call_command("load_demo")
    out = capsys.readouterr().out
    assert "Publishing the demo checkpoint with random weights (demo-tiny" in out and "corpora/udhr" in out
    model = Resource.objects.get(slug="polyglot-176b")
    assert list(model.versions.values_list("name", flat=True)) == ["demo-tiny"]


def test_it_refuses_to_load_the_demo_in_production(db, settings, capsys):
    settings.DEBUG = False
    with pytest.raises(CommandError) as refused:
        call_command("load_demo")
    assert "DEBUG=0" in str(refused.value) and "createsuperuser" in str(refused.value)
    assert not get_user_model().objects.filter(username__in=PASSWORDS).exists()
    assert "admin-demo-pass" not in capsys.readouterr().out
