"""Demo checkpoints: an architecture's real shapes with random weights, and a byte-level BPE tokenizer.

Real weights cannot be downloaded here; a real BLOOM checkpoint in the same format loads the same way.
The tokenizer is trained on a few built-in multilingual sentences, or on a corpus given as a path.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

SHAPES = {
    # tiny: 6 heads exercise the ALiBi slopes of a head count that is not a power of 2
    "tiny": {"hidden_size": 96, "n_layer": 6, "n_head": 6, "vocab_size": None, "shard": "400KB"},
    "bloom-560m": {"hidden_size": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 250880, "shard": "400MB"},
    "bloom-1b7": {"hidden_size": 2048, "n_layer": 24, "n_head": 16, "vocab_size": 250880, "shard": "500MB"},
}
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]  # BLOOM's ids 0-3

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
                         corpus: str | Path | None = None) -> Path:
    """Write config.json, sharded model-*.safetensors with their index, tokenizer.json and tokenizer_config.json into out."""
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    spec = SHAPES[shape]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(demo_texts(Path(corpus) if corpus else None), 512 if shape == "tiny" else 8000)
    # The tiny model's vocabulary is its tokenizer's; the real shapes keep BLOOM's 250,880 rows, which
    # make the embedding a third of bloom-1b7's bytes, as in the release.
    vocab = spec["vocab_size"] or tok.get_vocab_size()
    config = BloomConfig(vocab_size=vocab, hidden_size=spec["hidden_size"], n_layer=spec["n_layer"], n_head=spec["n_head"],
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, unk_token_id=0, seq_length=2048)
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    torch.manual_seed(seed)
    model = BloomForCausalLM._from_config(config, dtype=torch_dtype)
    model.save_pretrained(out, max_shard_size=spec["shard"])
    tok.save(str(out / "tokenizer.json"))
    # tokenizer.json does not say which tokens are special; transformers' AutoTokenizer (and so
    # lm-evaluation-harness's `hf` model) reads them from here, as from a real release.
    named = dict(zip(("unk_token", "bos_token", "eos_token", "pad_token"), SPECIAL))
    (out / "tokenizer_config.json").write_text(json.dumps(named, indent=2) + "\n")
    return out
