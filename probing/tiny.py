"""Tiny models built from a config with random weights, for code paths the embedded MiniLM cannot reach.

They exist to test *mechanics* (causal-LM scoring, unembedding rows, left padding), never to measure
geometry or ICL: their weights are random. Every output made with one says ``random weights`` in its name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

Arch = Literal["gpt2", "llama", "bert"]
_BASE_CORPUS = (
    "the a an is are of to and in on it this that animal tool fruit vehicle colour country A B foo bar "
    "yes no positive negative label word concept bat apple python mercury java bank crane mouse orange "
    "dog cat horse lion tiger hammer saw drill car bus train red blue green France Spain -> : . , \n"
)


RANDOM_WEIGHTS_MARKER = "MCICL_TINY_RANDOM_WEIGHTS"


def is_random_weights(location: str | Path | None) -> bool:
    """Whether ``location`` is a model folder made by :func:`build_tiny_model` (random weights)."""
    return bool(location) and (Path(location) / RANDOM_WEIGHTS_MARKER).is_file()


def build_tiny_tokenizer(corpus: Iterable[str] = (), vocab_size: int = 600):
    """A byte-level BPE tokenizer trained on ``corpus`` (every string is representable), with a pad token."""

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_BASE_CORPUS, *corpus], trainer=trainer)
    # Like GPT-2's and Llama's tokenizers, no token_type_ids (GPT-2 would embed them; transformers < 5 returns them
    # from a bare PreTrainedTokenizerFast by default).
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<eos>", unk_token=None, model_input_names=["input_ids", "attention_mask"])


def build_tiny_model(arch: Arch, folder: str | Path, *, seed: int = 0, hidden: int = 64, layers: int = 2,
                     heads: int = 4, corpus: Iterable[str] = ()) -> Path:
    """Save a tiny random-weight model of ``arch`` with its tokenizer to ``folder``; return the folder.

    The folder loads like any local model (``--model folder``): config.json, safetensors, tokenizer.
    """

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer(corpus)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=512, n_embd=hidden, n_layer=layers,
                                           n_head=heads, pad_token_id=tokenizer.pad_token_id,
                                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                             num_hidden_layers=layers, num_attention_heads=heads,
                                             num_key_value_heads=heads, max_position_embeddings=512,
                                             pad_token_id=tokenizer.pad_token_id,
                                             bos_token_id=tokenizer.bos_token_id,
                                             eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False))
    elif arch == "bert":
        model = BertModel(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=2 * hidden,
                                     pad_token_id=tokenizer.pad_token_id))
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; accepted: 'gpt2', 'llama', 'bert'")
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / RANDOM_WEIGHTS_MARKER).write_text(
        f"tiny {arch} with random weights (seed {seed}): for testing mechanics only, not a pretrained model\n")
    return folder


TRAINED_MARKER = "MCICL_TINY_TRAINED"


def is_tiny_trained(location: str | Path | None) -> bool:
    """Whether ``location`` is a checkpoint folder made by :func:`train_tiny_checkpoints` after step 0 (a tiny
    model trained for a few steps on synthetic text, not a pretrained model)."""
    return bool(location) and (Path(location) / TRAINED_MARKER).is_file()


def train_tiny_checkpoints(folder: str | Path, texts: Iterable[str], steps: Iterable[int], *, arch: Arch = "gpt2",
                           seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 2, batch_size: int = 16,
                           block: int = 48, lr: float = 3e-3) -> list[Path]:
    """Train a tiny random-init causal LM on ``texts`` and save it after each of ``steps`` optimizer steps as
    ``folder/step_<N>`` (``save_pretrained`` folders with the tokenizer); return the folders in step order.

    ``step_0`` is the random initialisation (marked random weights); later folders are marked tiny-trained.
    Training is next-token prediction on the texts joined by EOS and cut into ``block``-token windows, drawn with
    a seeded generator (AdamW), so the same arguments give the same checkpoints. For testing the checkpoint sweep's
    mechanics: a few seconds on a CPU, not a model of anything.
    """
    if arch not in ("gpt2", "llama"):
        raise ValueError(f"train_tiny_checkpoints: arch {arch!r}; accepted: 'gpt2' or 'llama' (a causal LM)")
    texts = list(texts)
    wanted = sorted(set(int(s) for s in steps))
    if not texts or not wanted or wanted[0] < 0:
        raise ValueError("train_tiny_checkpoints needs texts and steps >= 0 to save at, e.g. steps=[0, 10, 20]")
    folder = Path(folder)
    start = build_tiny_model(arch, folder / "step_0", seed=seed, hidden=hidden, layers=layers, heads=heads,
                             corpus=texts)
    model = (GPT2LMHeadModel if arch == "gpt2" else LlamaForCausalLM).from_pretrained(start)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(start)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
    data = torch.tensor(stream, dtype=torch.long)
    if len(data) <= block:
        raise ValueError(f"train_tiny_checkpoints: the texts are {len(data)} tokens, fewer than one block of "
                         f"{block + 1}; accepted: more text or a smaller block")
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    saved = [start] if wanted[0] == 0 else []
    model.train()
    for step in range(1, wanted[-1] + 1):
        starts = torch.randint(0, len(data) - block - 1, (batch_size,), generator=gen)
        batch = torch.stack([data[s:s + block + 1] for s in starts.tolist()])  # (B, block + 1)
        loss = model(input_ids=batch, labels=batch).loss  # transformers shifts the labels by one
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step in wanted:
            out = folder / f"step_{step}"
            model.eval()
            model.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
            (out / TRAINED_MARKER).write_text(
                f"tiny {arch} (seed {seed}) trained {step} AdamW steps on synthetic text, last batch loss "
                f"{loss.item():.4f}: for testing mechanics only, not a pretrained model\n")
            model.train()
            saved.append(out)
    if wanted[0] != 0:  # step_0 was only the starting point, not asked for
        for path in (folder / "step_0").iterdir():
            path.unlink()
        (folder / "step_0").rmdir()
    return saved
