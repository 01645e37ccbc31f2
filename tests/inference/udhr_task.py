"""Two small lm-evaluation-harness tasks of our own, built at run time from the UDHR corpus, over the
first paragraph of articles 1-3 in eight languages (Latin, Cyrillic, Arabic, Han and Devanagari
text, characters that byte-level tokens split):

- portal_udhr_language (multiple choice): which language is this passage in? Four languages named
  in their own script.
- portal_udhr_next (log-likelihood): the passage's next characters after its first ones. Its `acc`
  is lm-evaluation-harness's is_greedy; a random model is never greedy on real text, so a caller
  may give `greedy` (a context -> the model's own greedy continuation) for every other document.

write_udhr_tasks(folder) writes the documents (JSONL) and the tasks' YAML there; load them with
lm_eval.tasks.TaskManager(include_path=folder).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import yaml

from portal.shared import udhr_corpus

LANGUAGE_TASK, NEXT_TASK = "portal_udhr_language", "portal_udhr_next"
# UDHR file key -> the language's own name.
LANGUAGES = {"eng": "English", "fra": "Français", "spa": "Español", "rus": "Русский", "arb": "العربية",
             "cmn_hans": "中文", "hin": "हिन्दी", "yor": "Yorùbá"}
ARTICLES = ("article-1", "article-2", "article-3")
CHOICES = 4
PASSAGE_CHARS = 60  # short prompts, so that the tasks run in seconds on the tiny model


def udhr_passages() -> list[tuple[str, str]]:
    """(language key, the first PASSAGE_CHARS characters of the article's first paragraph), article by article."""
    wanted = {(key, section) for key in LANGUAGES for section in ARTICLES}
    passages = {}
    with gzip.open(udhr_corpus(), "rt", encoding="utf-8") as corpus:
        for line in corpus:
            row = json.loads(line)
            if (row["key"], row["section"]) in wanted and (row["key"], row["section"]) not in passages:
                passages[row["key"], row["section"]] = row["text"][:PASSAGE_CHARS]
    missing = wanted - set(passages)
    assert not missing, f"the UDHR corpus lacks {sorted(missing)}"
    return [(key, passages[key, section]) for section in ARTICLES for key in LANGUAGES]


def language_docs(passages) -> list[dict]:
    """The passage, four names (the right one among three others, in an order that varies), the right one's index."""
    docs = []
    for n, (key, text) in enumerate(passages):
        others = [k for k in LANGUAGES if k != key]
        wrong = [others[(n + step * 2) % len(others)] for step in range(CHOICES - 1)]
        label = n % CHOICES
        docs.append({"text": text, "choices": [LANGUAGES[k] for k in wrong[:label] + [key] + wrong[label:]], "label": label})
    return docs


def next_docs(passages, greedy: Callable[[str], str] | None) -> list[dict]:
    docs = []
    for n, (_, text) in enumerate(passages):
        cut = len(text) * 2 // 3  # some paragraphs (Chinese ones) are shorter than PASSAGE_CHARS
        own = greedy(text[:cut]) if greedy and n % 2 else ""
        docs.append({"context": text[:cut], "continuation": own or text[cut:]})
    return docs


def _write(folder: Path, task: str, docs: list[dict], **config) -> None:
    data = folder / f"{task}.jsonl"
    data.write_text("".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs), encoding="utf-8")
    config = {
        "task": task,
        # The `json` builder of `datasets` reads the local file; its cache stays in the folder too.
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "datasets-cache")},
        "test_split": "test",
        **config,
        "metadata": {"version": 1.0},
    }
    (folder / f"{task}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


def write_udhr_tasks(folder: Path, *, greedy: Callable[[str], str] | None = None) -> list[str]:
    """Write both tasks into `folder` and return their names."""
    folder.mkdir(parents=True, exist_ok=True)
    passages = udhr_passages()
    _write(folder, LANGUAGE_TASK, language_docs(passages), output_type="multiple_choice",
           doc_to_text="{{text}}\nLanguage:", doc_to_choice="choices", doc_to_target="label",
           metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}])
    # No delimiter: the continuation is the text's own next characters, spaces included.
    _write(folder, NEXT_TASK, next_docs(passages, greedy), output_type="loglikelihood", doc_to_text="{{context}}",
           doc_to_target="{{continuation}}", target_delimiter="", metric_list=[{"metric": "acc"}, {"metric": "perplexity"}])
    return [LANGUAGE_TASK, NEXT_TASK]
