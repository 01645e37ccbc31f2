"""`datasets.load_dataset` against the portal: versions built by the shard builder load by config name
(the README's `configs:`), normally and streaming, pinned to a revision, and a grant of some configs
loads those only."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from datasets_app import services
from datasets_app.models import AccessRequest, DownloadEvent, Version
from tests.datasets_app.test_builds import build_command, udhr_sample
from tests.datasets_app.test_hub_clients import hub, read_token  # noqa: F401 (hub: the fixture)

REPO = "test/corpus-a"


@pytest.fixture
def built(cast, release_storage, tmp_path):
    """v1 of the UDHR in French and English, then v2 adding Arabic: (v1, v2, rows per config of v2)."""
    for name, languages in (("v1", ("fr", "en")), ("v2", ("fr", "en", "ar"))):
        (tmp_path / name).mkdir()
        source, rows = udhr_sample(tmp_path / name, languages=languages)
        build_command(REPO, name, source, id_column="id", language_column="lang", shard_size="64KiB")
    return Version.objects.get(name="v1"), Version.objects.get(name="v2"), Counter(row["lang"] for row in rows)


LOAD = f"""
import itertools
import datasets
def rows(config, **kwargs):
    return datasets.load_dataset({REPO!r}, config, split="train", **kwargs).num_rows
def streamed(config, **kwargs):
    return sum(1 for _ in datasets.load_dataset({REPO!r}, config, split="train", streaming=True, **kwargs))
"""


def test_it_loads_a_built_version_by_config_normally_streaming_and_pinned(cast, built, hub):
    v1, v2, counts = built

    got = hub(LOAD + f"""
report(fr=rows("fr"), ar=rows("ar"), fr_streamed=streamed("fr"), en_v1=rows("en", revision={v1.revision!r}),
       en_v1_streamed=streamed("en", revision="v1"), ar_v1=refusal(lambda: rows("ar", revision="v1")),
       first=next(iter(datasets.load_dataset({REPO!r}, "ar", split="train", streaming=True))))
""", token=read_token(cast.granted))

    assert got["fr"] == got["fr_streamed"] == counts["fr"] and got["ar"] == counts["ar"]
    assert any("\u0627" in value for value in got["first"].values() if isinstance(value, str))  # Arabic text
    assert got["en_v1"] == got["en_v1_streamed"] == counts["en"]
    assert got["ar_v1"]["type"] == "ValueError" and "ar" in got["ar_v1"]["message"]  # v1 had no Arabic config
    served = DownloadEvent.objects.filter(username="granted", method="GET")
    assert set(served.filter(path__startswith="data/fr/").values_list("version", flat=True)) == {"v2"}
    assert set(served.filter(path__startswith="data/en/").values_list("version", flat=True)) == {"v1"}
    assert served.filter(path__startswith="data/ar/").exclude(byte_range="").exists()  # streaming reads ranges


def test_it_loads_only_the_configs_a_partial_grant_covers(cast, built, hub):
    _, v2, counts = built
    AccessRequest.objects.filter(pk=cast.requests["pending"].pk).update(all_configs=False, configs=["fr"])
    services.access_request_approve(access_request=AccessRequest.objects.get(pk=cast.requests["pending"].pk),
                                    reviewer=cast.reviewer_a, expires_at=timezone.now() + timedelta(days=30))

    got = hub(LOAD + """
report(fr=rows("fr"), fr_streamed=streamed("fr"), en=refusal(lambda: rows("en")), en_streamed=refusal(lambda: streamed("en")))
""", token=read_token(cast.pending))

    assert got["fr"] == got["fr_streamed"] == counts["fr"]
    # The card lists every config (as the dataset's public page does); the files of the others are not theirs:
    # datasets finds them missing from the listing it was given.
    for refused in (got["en"], got["en_streamed"]):
        assert refused["type"] == "FileNotFoundError" and "data/en/" in refused["message"]
    assert not DownloadEvent.objects.filter(username="pending", path__startswith="data/en/").exists()
