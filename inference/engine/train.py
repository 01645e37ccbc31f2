"""Training a small BLOOM on a JSON-lines corpus (the UDHR), for demo checkpoints whose text looks real and
whose quantization error can be measured.

The corpus: one JSON object per line with a `text` field; `key` names the document a record belongs to
(a UDHR translation) and `id` is the record's stable id. Held out, never trained on (the tokenizer
included): every record whose crc32(id) % 10 == 0, about 10% of the paragraphs of every translation,
so the held-out text is in the languages the model learned. A few minutes on a CPU cannot teach a
small model 464 languages (it sees each of them for a few hundred tokens); the demo trains on a couple
of dozen (demo.DEMO_LANGUAGES) instead, several times over, and writes text that looks like theirs. Documents are their records joined by
newlines, each ended by </s>; training reads random fixed-length windows of the concatenated tokens,
evaluation the held-out tokens cut into consecutive windows of the same length.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import EngineError

HELD_OUT_MODULUS = 10
HELD_OUT_RULE = f"records whose crc32(id) % {HELD_OUT_MODULUS} == 0 (about 10% of the paragraphs of every document)"
SEQ_LEN = 128  # tokens per window, in training and evaluation alike
BATCH_SIZE = 16  # windows per step: 2,048 tokens
PEAK_LR = 3e-3
EVAL_WINDOWS = 256  # held-out windows evaluated by default, spread evenly over the held-out text


def held_out(record_id: str) -> bool:
    return zlib.crc32(record_id.encode("utf-8")) % HELD_OUT_MODULUS == 0


@dataclass
class Corpus:
    """A corpus split into training and held-out documents (texts), and what identifies it."""
    train: list[str]
    held_out: list[str]
    description: dict  # name, sha256, records, documents, train_records, held_out_records, held_out_rule


def read_corpus(path: str | Path, languages: list[str] | None = None) -> Corpus:
    """The corpus's documents split by HELD_OUT_RULE; with languages (the records' `lang` tags), theirs only."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"corpus {path} does not exist; give the UDHR corpus, e.g. ../shared/corpora/udhr/udhr.jsonl.gz")
    if ".jsonl" not in path.name:
        raise EngineError(f"corpus {path} is not JSON lines (.jsonl or .jsonl.gz, one object with a text field per line)")
    docs: dict[str, tuple[list[str], list[str]]] = {}  # key -> (train paragraphs, held-out paragraphs), in file order
    records = n_held = 0
    found: set[str] = set()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record["text"]
                except (ValueError, KeyError, TypeError):
                    raise EngineError(f"corpus {path}, line {n}: not a JSON object with a text field") from None
                if not isinstance(text, str) or not text.strip():
                    continue
                if languages is not None:
                    lang = record.get("lang")
                    if lang not in languages:
                        continue
                    found.add(lang)
                records += 1
                is_held = held_out(str(record.get("id", n)))
                n_held += is_held
                docs.setdefault(str(record.get("key", "")), ([], []))[is_held].append(text)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise EngineError(f"corpus {path} cannot be read ({exc.__class__.__name__}: {exc}); is it a complete .jsonl(.gz) file?") from None
    if languages is not None and set(languages) - found:
        missing = ", ".join(sorted(set(languages) - found))
        raise EngineError(f"corpus {path} has no records with lang {missing}; give tags of its lang field (fr, pt-BR, zh-Hans...)")
    if not records - n_held or not n_held:
        raise EngineError(f"corpus {path} has {records - n_held} training and {n_held} held-out records; "
                          f"it needs both ({HELD_OUT_RULE}): give a larger corpus")
    description = {"name": path.name, "sha256": corpus_sha256(path), "languages": sorted(languages) if languages else "all",
                   "records": records, "documents": len(docs),
                   "train_records": records - n_held, "held_out_records": n_held, "held_out_rule": HELD_OUT_RULE}
    return Corpus(train=["\n".join(t) for t, _ in docs.values() if t],
                  held_out=["\n".join(h) for _, h in docs.values() if h], description=description)


def corpus_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def token_stream(tokenizer, docs: list[str], eos_id: int):
    """The documents' tokens end to end, each document ended by eos_id: a 1-D int64 tensor."""
    import torch

    ids: list[int] = []
    for encoding in tokenizer.encode_batch(docs, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.long)


def eval_windows(stream, *, seq_len: int = SEQ_LEN, max_windows: int | None = EVAL_WINDOWS):
    """Consecutive windows [N, seq_len] of a token stream (the tail shorter than a window is left out);
    at most max_windows of them, evenly spread so that every part of the corpus (every language) counts."""
    import torch

    n = stream.numel() // seq_len
    if n == 0:
        raise EngineError(f"the held-out text has {stream.numel()} tokens, fewer than one window of {seq_len}")
    windows = stream[: n * seq_len].view(n, seq_len)
    if max_windows and n > max_windows:
        windows = windows[torch.linspace(0, n - 1, max_windows).round().long()]
    return windows


def lr_at(progress: float, *, peak: float = PEAK_LR, warmup: float = 0.05, floor: float = 0.1) -> float:
    """Linear warm-up over the first 5% of the run, then a cosine down to 10% of the peak at its end."""
    if progress < warmup:
        return peak * (progress + 1e-3) / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, stream, *, seconds: float | None = None, steps: int | None = None, seed: int = 0,
          batch_size: int = BATCH_SIZE, seq_len: int = SEQ_LEN, peak_lr: float = PEAK_LR, log=None) -> dict:
    """Train model (fp32, in place) on random windows of stream for a wall-clock budget or a number of steps.

    With steps the run is reproducible (same seed, thread count and torch build, same weights), and the
    learning-rate schedule follows the steps; with seconds it follows the elapsed time, so that it always
    ends decayed however fast this machine is at the moment (the number of steps then varies).
    """
    import torch

    if (seconds is None) == (steps is None):
        raise EngineError("train for a number of seconds or a number of steps, not both")
    if (seconds is not None and seconds <= 0) or (steps is not None and steps < 1):
        raise EngineError("the training budget must be positive")
    if stream.numel() < seq_len + 2:
        raise EngineError(f"the training text has {stream.numel()} tokens, fewer than one window of {seq_len}")
    generator = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices decay; biases and norms do not
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=peak_lr, betas=(0.9, 0.95))
    offsets = torch.arange(seq_len)
    model.train()
    losses: list[float] = []
    start = last_log = time.perf_counter()
    step = 0
    while True:
        elapsed = time.perf_counter() - start
        progress = step / steps if steps is not None else elapsed / seconds
        if progress >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(progress, peak=peak_lr)
        starts = torch.randint(0, stream.numel() - seq_len, (batch_size,), generator=generator)
        batch = stream[starts[:, None] + offsets]  # [B, T]
        loss = model(input_ids=batch, labels=batch).loss  # mean next-token NLL over the B x (T-1) targets
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step += 1
        if log and (time.perf_counter() - last_log >= 10 or step == 1):
            last_log = time.perf_counter()
            log(f"step {step}: loss {losses[-1]:.3f}, {last_log - start:.0f} s, "
                f"{step * batch_size * seq_len / (last_log - start):.0f} tokens/s")
    model.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - start, 1), "tokens_seen": step * batch_size * seq_len,
            "batch_size": batch_size, "seq_len": seq_len, "peak_lr": peak_lr,
            "schedule": "AdamW (0.9, 0.95), weight decay 0.1 on matrices, gradient clip 1.0; linear warm-up over 5%, "
                        "cosine to 10% of the peak" + (" by steps" if steps is not None else " by elapsed time"),
            "initial_loss": round(losses[0], 4), "final_train_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4)}


def held_out_perplexity(model, windows, batch_size: int = 32) -> float:
    """exp(token-weighted mean next-token NLL) of a transformers causal LM over windows [N, T], in fp32."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for b in range(0, windows.shape[0], batch_size):
            chunk = windows[b:b + batch_size]
            loss = model(input_ids=chunk, labels=chunk).loss.double()
            n = chunk.shape[0] * (chunk.shape[1] - 1)
            total += loss.item() * n
            count += n
    return math.exp(total / count)
