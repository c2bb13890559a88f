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
