"""make-demo-checkpoint --train: a BLOOM trained on the UDHR, its held-out split written beside it."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from inference.engine.cli import main
from inference.engine.demo import make_demo_checkpoint
from inference.engine.errors import EngineError
from inference.engine.train import held_out
from portal.shared import udhr_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def udhr_subset(path, translations: int = 40):
    """The records of the corpus's first `translations` translations (real text in a few dozen languages), so that
    a test trains its tokenizer and model in seconds; skips the test when the corpus is not here."""
    try:
        corpus = udhr_corpus()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    keys: list[str] = []
    with gzip.open(corpus, "rt", encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for line in f:
            key = json.loads(line)["key"]
            if key not in keys:
                if len(keys) == translations:
                    break
                keys.append(key)
            out.write(line)
    return path


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return udhr_subset(tmp_path_factory.mktemp("udhr") / "udhr-40.jsonl")


@pytest.fixture(scope="module")
def trained(subset, tmp_path_factory):
    return make_demo_checkpoint(tmp_path_factory.mktemp("trained") / "tiny", shape="tiny", dtype="fp32", seed=0,
                                corpus=subset, train_steps=60)


def test_it_trains_until_the_loss_falls_and_held_out_perplexity_is_far_below_uniform(trained, subset):
    record = json.loads((trained / "training.json").read_text())
    vocab = json.loads((trained / "config.json").read_text())["vocab_size"]
    assert record["steps"] == 60 and record["tokens_seen"] == 60 * 16 * 128 and record["shape"] == "tiny"
    # Uniform guessing is a loss of log(512) = 6.24; the model must have learned far more than that.
    assert record["initial_loss"] > 6 and record["final_train_loss"] < record["initial_loss"] - 1.5, record
    assert record["held_out"]["perplexity_fp32"] < vocab / 4, record
    # The split is described well enough to evaluate the same held-out text again.
    lines = [json.loads(line) for line in subset.read_text(encoding="utf-8").splitlines()]
    assert record["corpus"]["records"] == len(lines) and record["corpus"]["documents"] == 40
    assert record["corpus"]["held_out_records"] == sum(held_out(r["id"]) for r in lines) > 0
    assert record["held_out"]["rule"] == record["corpus"]["held_out_rule"] and "crc32(id)" in record["held_out"]["rule"]
    assert record["corpus"]["languages"] == "all"


def test_it_saves_the_files_a_random_demo_has_and_the_engine_generates_text_with_it(trained):
    from inference.engine import Engine

    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "training.json"} <= names
    assert len([n for n in names if n.endswith(".safetensors")]) > 1
    with Engine(trained, memory_budget="1GiB", max_batch_size=1, max_seq_len=64) as engine:
        text = engine.generate(["Article 1"], max_new_tokens=32, temperature=1.0, seed=0).completions[0].text
    # Trained on text of spaced words, it writes spaced words, not a run of random byte pieces. (Sampled:
    # greedy decoding of a model trained for seconds repeats its most likely token.)
    assert text.count(" ") >= 3 and "\ufffd" not in text, text


def test_it_trains_the_same_weights_for_the_same_seed_and_steps(subset, tmp_path):
    runs = [make_demo_checkpoint(tmp_path / name, shape="tiny", dtype="fp32", seed=7, corpus=subset, train_steps=3)
            for name in ("a", "b")]
    shards = sorted(p.name for p in runs[0].glob("*.safetensors"))
    assert shards and all((runs[0] / s).read_bytes() == (runs[1] / s).read_bytes() for s in shards)
    first, second = (json.loads((run / "training.json").read_text()) for run in runs)
    assert first["final_train_loss"] == second["final_train_loss"] and first["budget"] == {"steps": 3}


def test_it_trains_for_a_wall_clock_budget_on_the_languages_asked_for(subset, tmp_path):
    lines = [json.loads(line) for line in subset.read_text(encoding="utf-8").splitlines()]
    two = sorted({r["lang"] for r in lines})[:2]
    out = make_demo_checkpoint(tmp_path / "timed", shape="tiny", dtype="bf16", corpus=subset, train_seconds=2, languages=two)
    record = json.loads((out / "training.json").read_text())
    assert record["budget"] == {"seconds": 2} and record["steps"] >= 1 and 2 <= record["seconds"] < 10
    assert record["corpus"]["languages"] == two and record["corpus"]["records"] == sum(r["lang"] in two for r in lines)
    assert record["dtype"] == "bf16" and json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_it_refuses_a_corpus_it_cannot_split_with_one_line_that_says_what_to_do(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\nnot json\n', encoding="utf-8")
    with pytest.raises(EngineError, match="line 2: not a JSON object with a text field"):
        make_demo_checkpoint(tmp_path / "out", shape="tiny", corpus=bad, train_steps=1)
    assert not (tmp_path / "out").exists()  # nothing written before the corpus was read
    # One record is all training or all held out: no split to learn from and evaluate on.
    one = tmp_path / "one.jsonl"
    one.write_text('{"id": "a", "key": "x", "text": "All human beings are born free."}\n', encoding="utf-8")
    with pytest.raises(EngineError, match="it needs both"):
        make_demo_checkpoint(tmp_path / "out", shape="tiny", corpus=one, train_steps=1)
    with pytest.raises(EngineError, match="does not exist"):
        make_demo_checkpoint(tmp_path / "out", shape="tiny", corpus=tmp_path / "missing.jsonl.gz", train_seconds=1)
    with pytest.raises(EngineError, match="no records with lang xx-Nowhere; give tags of its lang field"):
        make_demo_checkpoint(tmp_path / "out", shape="tiny", corpus=one, train_seconds=1, languages=["xx-Nowhere"])

    assert main(["make-demo-checkpoint", str(tmp_path / "out"), "--shape", "small", "--train", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--train needs --corpus" in err
    assert main(["make-demo-checkpoint", str(tmp_path / "out"), "--shape", "tiny", "--train", "5", "--train-steps", "3"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
