"""The fixed prompt's umT5 embedding, computed once per training run and stored in the DiT's
`prompt_context` buffer, so no text encoder is ever loaded at render time.

Two layouts hold the encoder (what `streamavatar download ... --with-text-encoder` fetches):
- diffusers: `text_encoder/` (a transformers `UMT5EncoderModel`) and `tokenizer/`;
- official Wan: `models_t5_umt5-xxl-enc-bf16.pth` (Wan's own T5 module names, mapped here to
  the transformers ones) and the tokenizer in `google/umt5-xxl/`.
The result is what Wan and diffusers feed their DiT: the encoder's last hidden state for the
real tokens (EOS included), then zero rows up to `text_len` (wan22-backbone.md section 4).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from streamavatar_cli.errors import ModelError

FIXED_PROMPT = "a person is speaking and listening"
OFFICIAL_WEIGHTS = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_TOKENIZER = "google/umt5-xxl"

# umT5-XXL (wan22-backbone.md section 4): the official .pth carries no config.
UMT5_XXL = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
)  # fmt: skip

# Wan's t5.py names -> transformers' UMT5 names ({i}: the block index).
_WAN_TO_HF = (
    (r"token_embedding\.weight", "shared.weight"),
    (r"blocks\.(\d+)\.norm1\.weight", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"blocks\.(\d+)\.attn\.([qkvo])\.weight", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (
        r"blocks\.(\d+)\.pos_embedding\.embedding\.weight",
        r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight",
    ),
    (r"blocks\.(\d+)\.norm2\.weight", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (
        r"blocks\.(\d+)\.ffn\.gate\.0\.weight",
        r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight",
    ),
    (r"blocks\.(\d+)\.ffn\.fc1\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"blocks\.(\d+)\.ffn\.fc2\.weight", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
    (r"norm\.weight", "encoder.final_layer_norm.weight"),
)


def wan_t5_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official Wan umT5 encoder state dict to transformers' UMT5EncoderModel names."""
    out = {}
    for name, tensor in state.items():
        for pattern, target in _WAN_TO_HF:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, target, name)] = tensor
                break
        else:
            raise ModelError(
                f"{OFFICIAL_WEIGHTS}: unexpected key {name!r} (not a Wan umT5 encoder)"
            )
    out["encoder.embed_tokens.weight"] = out["shared.weight"]
    return out


def find_text_encoder(folder: Path) -> str | None:
    """'diffusers', 'official' or None: which text-encoder layout `folder` holds."""
    if (folder / "text_encoder" / "config.json").is_file() and (folder / "tokenizer").is_dir():
        return "diffusers"
    if (folder / OFFICIAL_WEIGHTS).is_file() and (folder / OFFICIAL_TOKENIZER).is_dir():
        return "official"
    return None


def load_text_encoder(folder: Path, device: str | torch.device = "cpu"):
    """(tokenizer, UMT5EncoderModel in eval mode) from either layout."""
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    layout = find_text_encoder(folder)
    if layout is None:
        raise ModelError(
            f"{folder}: no umT5 text encoder (text_encoder/ + tokenizer/, or {OFFICIAL_WEIGHTS} "
            f"+ {OFFICIAL_TOKENIZER}/); run `streamavatar download <model> --with-text-encoder`"
        )
    if layout == "diffusers":
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", weights_only=True)
        encoder = UMT5EncoderModel.from_pretrained(folder / "text_encoder", weights_only=True)
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder / OFFICIAL_TOKENIZER, weights_only=True)
        state = torch.load(folder / OFFICIAL_WEIGHTS, map_location="cpu", weights_only=True)
        config = UMT5Config(**{**UMT5_XXL, **_shape_from_state(state)})
        with torch.device("meta"):
            encoder = UMT5EncoderModel(config)
        encoder.load_state_dict(wan_t5_to_hf(state), assign=True, strict=True)
    return tokenizer, encoder.to(device).eval()


def _shape_from_state(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The official checkpoint is umT5-XXL; reading the shapes keeps small test encoders exact."""
    vocab, d_model = state["token_embedding.weight"].shape
    n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    buckets, heads = state["blocks.0.pos_embedding.embedding.weight"].shape
    return dict(
        vocab_size=vocab, d_model=d_model, num_layers=n_layers, num_heads=heads,
        d_kv=state["blocks.0.attn.q.weight"].shape[0] // heads,
        d_ff=state["blocks.0.ffn.fc1.weight"].shape[0], relative_attention_num_buckets=buckets,
    )  # fmt: skip


@torch.no_grad()
def embed_prompt(tokenizer, encoder, text_len: int, prompt: str = FIXED_PROMPT) -> torch.Tensor:
    """[text_len, d_model] fp32: the encoder's output for the prompt's tokens, then zero rows."""
    ids = tokenizer(prompt, truncation=True, max_length=text_len, return_tensors="pt")
    device = next(encoder.parameters()).device
    hidden = encoder(
        input_ids=ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device)
    ).last_hidden_state[0]
    n = int(ids.attention_mask.sum())
    out = torch.zeros(text_len, hidden.shape[-1])
    out[:n] = hidden[:n].float().cpu()
    return out


def prompt_context(folder: Path, text_len: int, text_dim: int, prompt: str = FIXED_PROMPT):
    """The fixed prompt's `prompt_context` [text_len, text_dim] from the encoder in `folder`."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, encoder = load_text_encoder(folder, device)
    context = embed_prompt(tokenizer, encoder, text_len, prompt)
    if context.shape[-1] != text_dim:
        raise ModelError(
            f"{folder}: the text encoder's width {context.shape[-1]} is not the DiT's "
            f"text_dim {text_dim}"
        )
    return context
