"""The shared files are found through SHARED_DIR or beside the checkout, nowhere else."""

import pytest

from portal.shared import udhr_corpus


def test_it_finds_the_corpus_where_shared_dir_points(tmp_path, monkeypatch):
    corpus = tmp_path / "corpora" / "udhr" / "udhr.jsonl.gz"
    corpus.parent.mkdir(parents=True)
    corpus.write_bytes(b"")
    monkeypatch.setenv("SHARED_DIR", str(tmp_path))
    assert udhr_corpus() == corpus


def test_it_names_shared_dir_when_the_files_are_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARED_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as missing:
        udhr_corpus()
    assert "SHARED_DIR" in str(missing.value) and str(tmp_path) in str(missing.value)

