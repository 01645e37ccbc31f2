"""Demo checkpoints: an architecture's real shapes with random or trained weights, and a byte-level BPE tokenizer.

Real weights cannot be downloaded here; a real BLOOM checkpoint in the same format loads the same way.
With random weights the tokenizer is trained on a few built-in multilingual sentences, or on a corpus
given as a path. Trained (train_seconds or train_steps, see train.py), the model and its tokenizer learn
the training part of a JSON-lines corpus (the UDHR), and training.json in the checkpoint says how, with
the held-out split that `python -m inference.engine perplexity` evaluates.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from .errors import EngineError

# vocab_size None: the model's vocabulary is its tokenizer's (tokenizer_vocab entries)
SHAPES = {
    # tiny: 6 heads exercise the ALiBi slopes of a head count that is not a power of 2
    "tiny": {"hidden_size": 96, "n_layer": 6, "n_head": 6, "vocab_size": None, "tokenizer_vocab": 512, "shard": "400KB"},
    # small: 5.2M parameters, which learns visibly from the UDHR in a few minutes on 2 CPU cores (1,500-2,500
    # tokens a second there); several shards still, as a real release has
    "small": {"hidden_size": 256, "n_layer": 4, "n_head": 4, "vocab_size": None, "tokenizer_vocab": 8000, "shard": "8MB"},
    "bloom-560m": {"hidden_size": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 250880, "tokenizer_vocab": 8000, "shard": "400MB"},
    "bloom-1b7": {"hidden_size": 2048, "n_layer": 24, "n_head": 16, "vocab_size": 250880, "tokenizer_vocab": 8000, "shard": "500MB"},
}
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]  # BLOOM's ids 0-3
# What a trained demo learns by default (the UDHR's `lang` tags): the languages of DEMO_TEXT and ten more,
# eight scripts, ~24 translations of ~4,000 tokens each, which a small model sees several times in 3 minutes.
DEMO_LANGUAGES = ("en", "fr", "es", "pt-BR", "ca", "eu", "sw", "yo", "id", "vi", "hi", "bn", "ar", "zh-Hans",
                  "de-1996", "it", "ru", "ja", "ko", "tr", "pl", "nl", "fa", "sv")

DEMO_TEXT = """\
All human beings are born free and equal in dignity and rights.
Tous les êtres humains naissent libres et égaux en dignité et en droits.
Todos los seres humanos nacen libres e iguales en dignidad y derechos.
Todos os seres humanos nascem livres e iguais em dignidade e em direitos.
Tots els éssers humans neixen lliures i iguals en dignitat i en drets.
Gizon-emakume guztiak aske jaiotzen dira, duintasun eta eskubide berberak dituztela.
Watu wote wamezaliwa huru, hadhi na haki zao ni sawa.
Gbogbo ènìyàn ni a bí ní òmìnira; iyì àti ẹ̀tọ́ kọ̀ọ̀kan sì dọ́gba.
Semua orang dilahirkan merdeka dan mempunyai martabat dan hak-hak yang sama.
Tất cả mọi người sinh ra đều được tự do và bình đẳng về nhân phẩm và quyền.
सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता और समानता प्राप्त है।
সমস্ত মানুষ স্বাধীনভাবে সমান মর্যাদা এবং অধিকার নিয়ে জন্মগ্রহণ করে।
يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق.
人人生而自由，在尊严和权利上一律平等。
The engine streams the layers that do not fit in memory from the checkpoint files while it computes.
A batch of prompts shares every layer it reads, so larger batches cost little more time per step.
def generate(prompt, max_new_tokens=32):
    return engine.generate([prompt], max_new_tokens=max_new_tokens)
"""


def demo_texts(corpus: Path | None, limit: int = 20000):
    """The built-in text, plus up to `limit` lines of a corpus (.jsonl[.gz] with a `text` field, or plain text)."""
    yield from DEMO_TEXT.splitlines()
    if corpus is None:
        return
    opener = gzip.open if corpus.suffix == ".gz" else open
    with opener(corpus, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= limit:
                break
            if ".jsonl" in corpus.name:
                line = json.loads(line).get("text", "")
            yield line.rstrip("\n")


def train_tokenizer(texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def make_demo_checkpoint(out: str | Path, *, shape: str, dtype: str = "bf16", seed: int = 0,
                         corpus: str | Path | None = None, train_seconds: float | None = None,
                         train_steps: int | None = None, languages: list[str] | None = None, log=None) -> Path:
    """Write config.json, sharded model-*.safetensors with their index, tokenizer.json and tokenizer_config.json
    into out; trained (train_seconds or train_steps, on corpus: the records of `languages`, or all), training.json
    too. log: a callable given one line of training progress at a time."""
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    if shape not in SHAPES:
        raise EngineError(f"no demo shape {shape!r}; choose one of {', '.join(SHAPES)}")
    spec = SHAPES[shape]
    trained = train_seconds is not None or train_steps is not None
    if trained and corpus is None:
        raise EngineError("training needs a corpus: give the UDHR corpus, e.g. ../shared/corpora/udhr/udhr.jsonl.gz")
    data = None
    if trained:
        from .train import read_corpus

        data = read_corpus(corpus, list(languages) if languages else None)  # before anything is written: a bad corpus leaves out untouched
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Trained, the tokenizer sees the training text only: held-out text must be as new to it as to the model.
    texts = data.train if data else demo_texts(Path(corpus) if corpus else None)
    tok = train_tokenizer(texts, spec["tokenizer_vocab"])
    # The tiny and small models' vocabulary is their tokenizer's; the real shapes keep BLOOM's 250,880 rows,
    # which make the embedding a third of bloom-1b7's bytes, as in the release.
    vocab = spec["vocab_size"] or tok.get_vocab_size()
    config = BloomConfig(vocab_size=vocab, hidden_size=spec["hidden_size"], n_layer=spec["n_layer"], n_head=spec["n_head"],
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, unk_token_id=0, seq_length=2048)
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    torch.manual_seed(seed)
    if data is None:
        model = BloomForCausalLM._from_config(config, dtype=torch_dtype)
    else:
        model, training = _train(BloomForCausalLM._from_config(config, dtype=torch.float32), tok, data, seed=seed,
                                 seconds=train_seconds, steps=train_steps, log=log)
        model = model.to(torch_dtype)
    model.save_pretrained(out, max_shard_size=spec["shard"])
    tok.save(str(out / "tokenizer.json"))
    # tokenizer.json does not say which tokens are special; transformers' AutoTokenizer (and so
    # lm-evaluation-harness's `hf` model) reads them from here, as from a real release.
    named = dict(zip(("unk_token", "bos_token", "eos_token", "pad_token"), SPECIAL))
    (out / "tokenizer_config.json").write_text(json.dumps(named, indent=2) + "\n")
    if data is not None:
        training = {"shape": shape, "dtype": dtype, **training}
        (out / "training.json").write_text(json.dumps(training, indent=2, ensure_ascii=False) + "\n")
    return out


def _train(model, tok, data, *, seed: int, seconds: float | None, steps: int | None, log):
    """The model trained on data.train, and what training.json records: the run, the corpus and its split,
    and the held-out perplexity of the fp32 weights (before any conversion to the checkpoint's dtype)."""
    import torch

    from .train import EVAL_WINDOWS, SEQ_LEN, eval_windows, held_out_perplexity, token_stream, train

    eos = tok.token_to_id("</s>")
    stream = token_stream(tok, data.train, eos)
    if log:
        log(f"training on {stream.numel():,} tokens of {data.description['documents']} documents "
            f"({data.description['train_records']:,} records; {data.description['held_out_records']:,} held out)")
    run = train(model, stream, seconds=seconds, steps=steps, seed=seed, log=log)
    windows = eval_windows(token_stream(tok, data.held_out, eos))
    perplexity = held_out_perplexity(model, windows)
    if log:
        log(f"trained {run['steps']} steps in {run['seconds']} s: train loss {run['initial_loss']:.2f} -> "
            f"{run['final_train_loss']:.2f}, held-out perplexity {perplexity:.1f} (vocabulary {tok.get_vocab_size():,})")
    return model, {
        "seed": seed, "threads": torch.get_num_threads(), "torch": torch.__version__, **run,
        "budget": {"seconds": seconds} if seconds is not None else {"steps": steps},
        "corpus": data.description,
        "held_out": {"rule": data.description["held_out_rule"], "seq_len": SEQ_LEN, "max_windows": EVAL_WINDOWS,
                     "windows": windows.shape[0],
                     "perplexity_fp32": round(perplexity, 4)},
    }
