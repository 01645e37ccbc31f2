import pytest

import sizes
from datasets_app import builds
from datasets_app.services import GovernanceError
from inference.engine import EngineError
from inference.engine.config import parse_size as engine_size


@pytest.mark.parametrize("text, size", [
    ("65536", 65536), ("64KiB", 65536), ("100kb", 100_000), ("1.5GiB", 3 * 2**29), ("2g", 2**31), (" 500 MB ", 500 * 10**6),
    ("256mib", 256 * 2**20), ("1TB", 10**12),
])
def test_it_reads_a_size_the_same_way_for_builds_and_the_engine(text, size):
    assert sizes.parse_size(text) == engine_size(text) == builds.parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "-5MiB", "", "1e9"])
def test_it_refuses_what_is_not_a_size_in_the_same_words_everywhere(text):
    with pytest.raises(ValueError) as plain:
        sizes.parse_size(text)
    with pytest.raises(EngineError) as engine_error:
        engine_size(text)
    with pytest.raises(GovernanceError) as build_error:
        builds.parse_size(text)
    assert str(plain.value) == str(engine_error.value) == str(build_error.value)
    assert "is not a size: write it like 256MiB" in str(build_error.value)
