"""Plain ViT checkpoints as they come: timm's key layout, or a Hugging Face ViT folder.

`read_vit(src)` returns the weights in timm's layout (`patch_embed.proj`,
`cls_token`, `pos_embed`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2,
mlp.fc1, mlp.fc2}`, `norm`, `head`) and the model's hyper-parameters, read
from the checkpoint itself: a Hugging Face `config.json`, or the tensors'
shapes (the head count, which no shape tells, defaults to D / 64 as in every
ViT of the original paper, and can be given).

Loading is safe: `.safetensors` through the safetensors library, `.pth` /
`.bin` / `.pt` through `torch.load(weights_only=True)`; no pickled code runs.
A variant this ViT does not have (register or distillation tokens,
LayerScale, qk-norm, another MLP, average pooling, a pre-norm) or a missing
tensor is refused with one line naming the key, never loaded in part.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

TIMM_EPS = 1e-6  # timm's ViTs: LayerNorm(eps=1e-6)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # a Hugging Face folder's weights

# timm keys of variants this ViT is not, and what they are.
UNSUPPORTED = (
    (r"^reg_token$", "register tokens"),
    (r"^dist_token$|^head_dist\.", "a distillation token (DeiT)"),
    (r"\.ls[12]\.(gamma|weight)$|\.gamma_[12]$", "LayerScale"),
    (r"\.attn\.(q_norm|k_norm)\.", "qk-norm"),
    (r"\.mlp\.(fc1_g|fc1_x|w12|w3|norm)\.", "a different MLP (gated or normed)"),
    (r"^fc_norm\.", "average pooling with fc_norm instead of the CLS token"),
    (r"^(norm_pre|patch_embed\.norm)\.", "a pre-norm after the patch embedding"),
)
BLOCK_KEYS = tuple(
    f"{layer}.{p}"
    for layer in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    for p in ("weight", "bias")
)


@dataclass(frozen=True)
class VitSpec:
    """A plain ViT's hyper-parameters, as read from a checkpoint."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    image_size: int
    in_chans: int
    num_classes: int | None  # None: the checkpoint has no classifier head
    layer_norm_eps: float


@dataclass
class VitCheckpoint:
    spec: VitSpec
    state: dict[str, torch.Tensor]  # timm's layout
    source: str
    notes: list[str] = field(default_factory=list)  # what was adapted or left out, and why


def read_vit(
    src: str | os.PathLike,
    *,
    num_heads: int | None = None,
    layer_norm_eps: float | None = None,
) -> VitCheckpoint:
    """A plain ViT from a checkpoint file (timm layout) or a Hugging Face ViT folder.

    num_heads and layer_norm_eps override what the checkpoint says (or, for a
    timm file, the defaults D / 64 and 1e-6).
    """
    path = Path(src)
    if path.is_dir():
        return _read_hf_folder(path, num_heads, layer_norm_eps)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = _unwrap(load_tensors(path), path)
    notes: list[str] = []
    if any(k.startswith(("vit.", "embeddings.", "encoder.layer.", "layers.")) for k in state):
        state = hf_to_timm(state, notes)
    eps = TIMM_EPS if layer_norm_eps is None else layer_norm_eps
    return _checked(state, str(path), num_heads, eps, notes)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors, .pth, .pt or .bin file, on the CPU, no code run."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # the library raises its own error types for bad files
            raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise ValueError(
            f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors, .pth, "
            ".pt or .bin, or a Hugging Face folder (config.json + model.safetensors)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad or unsafe file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not a plain tensor checkpoint that loads without running code "
            f"(torch.load weights_only): {first}"
        ) from None


def _unwrap(state, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint ({"state_dict": ...}, {"model": ...})."""
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    prefix = "module."  # saved from DistributedDataParallel
    if state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


# -- Hugging Face -> timm ---------------------------------------------------------------

# Per layer, the hub's names (what save_pretrained writes) and transformers 5's module names
# (what model.state_dict() holds there) -> timm's.
_HF_LAYER = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "mlp.fc1": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc2": "mlp.fc2",
}
_HF_QKV = {"attention.attention.query": "q", "attention.attention.key": "k",
           "attention.attention.value": "v", "attention.q_proj": "q", "attention.k_proj": "k",
           "attention.v_proj": "v"}  # fmt: skip


def hf_to_timm(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    """Hugging Face ViT keys (`ViTModel`, `ViTForImageClassification`) in timm's layout.

    The separate query, key and value projections become one qkv projection
    (q, k, v stacked in that order, as timm and ravit split it). A missing
    q/k/v bias (`qkv_bias: false`) becomes zeros, the same map. The pooler
    of `ViTModel` (unused by the classifier) is left out.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str, str], torch.Tensor] = {}  # (layer, q/k/v, weight/bias)
    for key, value in state.items():
        k = key.removeprefix("vit.")
        if k.startswith("pooler."):
            notes.append(f"left out {key}: ViTModel's pooler is not used by a classifier")
            continue
        simple = {
            "embeddings.cls_token": "cls_token",
            "embeddings.position_embeddings": "pos_embed",
            "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
            "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
            "layernorm.weight": "norm.weight",
            "layernorm.bias": "norm.bias",
            "classifier.weight": "head.weight",
            "classifier.bias": "head.bias",
        }
        if k in simple:
            out[simple[k]] = value
            continue
        m = re.fullmatch(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)", k)
        if m is None:
            raise ValueError(f"unsupported Hugging Face ViT key {key!r}: not in a plain ViT")
        i, name, kind = int(m[1]), m[2], m[3]
        if name in _HF_QKV:
            qkv[(i, _HF_QKV[name], kind)] = value
        elif name in _HF_LAYER:
            out[f"blocks.{i}.{_HF_LAYER[name]}.{kind}"] = value
        else:
            raise ValueError(f"unsupported Hugging Face ViT key {key!r}: not in a plain ViT")
    for i in sorted({i for i, _, _ in qkv}):
        parts = [qkv.get((i, p, "weight")) for p in "qkv"]
        if any(p is None for p in parts):
            raise ValueError(f"layer {i}: the checkpoint lacks a query, key or value weight")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(parts)
        biases = [qkv.get((i, p, "bias")) for p in "qkv"]
        if all(b is None for b in biases):
            biases = [torch.zeros(parts[0].shape[0], dtype=parts[0].dtype)] * 3
        elif any(b is None for b in biases):
            raise ValueError(f"layer {i}: the checkpoint has some but not all q/k/v biases")
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat(biases)
    return out


def _read_hf_folder(path: Path, num_heads: int | None, eps: float | None) -> VitCheckpoint:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{path} is a folder without config.json: expected a Hugging Face ViT folder "
            "(config.json + model.safetensors) or a checkpoint file"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from None
    if config.get("model_type") != "vit":
        raise ValueError(
            f"{config_file}: model_type {config.get('model_type')!r} is not a plain ViT "
            "(expected 'vit')"
        )
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(
            f"{config_file}: hidden_act {config['hidden_act']!r}; ravit's MLP uses exact GELU"
        )
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{path} has no {' or '.join(WEIGHT_FILES)}")
    notes: list[str] = []
    state = hf_to_timm(_unwrap(load_tensors(weights), weights), notes)
    heads = num_heads or config.get("num_attention_heads")
    eps = eps if eps is not None else float(config.get("layer_norm_eps", 1e-12))
    ckpt = _checked(state, str(path), heads, eps, notes)
    for name, value in (("hidden_size", ckpt.spec.embed_dim), ("image_size", ckpt.spec.image_size),
                        ("patch_size", ckpt.spec.patch_size),
                        ("num_hidden_layers", ckpt.spec.depth)):  # fmt: skip
        if name in config and config[name] != value:
            raise ValueError(f"{config_file}: {name} is {config[name]} but the weights say {value}")
    return ckpt


# -- checks and hyper-parameters from the tensors ------------------------------------------


def _checked(
    state: dict[str, torch.Tensor], source: str, num_heads: int | None, eps: float, notes: list
) -> VitCheckpoint:
    """The timm-layout state checked key by key, and the ViT it describes."""
    for key in sorted(state):
        for pattern, what in UNSUPPORTED:
            if re.search(pattern, key):
                raise ValueError(f"{source}: {key!r} belongs to {what}, which ravit's ViT has not")
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "norm.bias"):
        if key not in state:
            raise ValueError(f"{source}: missing {key!r}: not a ViT checkpoint in timm's layout")
    depth = 1 + max(
        (int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1
    )
    if depth == 0:
        raise ValueError(f"{source}: no transformer blocks ('blocks.0.*')")
    state = dict(state)
    for i in range(depth):
        qkv_bias = f"blocks.{i}.attn.qkv.bias"
        if qkv_bias not in state and f"blocks.{i}.attn.qkv.weight" in state:
            state[qkv_bias] = torch.zeros(state[f"blocks.{i}.attn.qkv.weight"].shape[0])
            notes.append(f"block {i}: no qkv bias in the checkpoint (qkv_bias=False): zeros")
        for name in BLOCK_KEYS:
            if f"blocks.{i}.{name}" not in state:
                raise ValueError(f"{source}: missing 'blocks.{i}.{name}'")
    if "patch_embed.proj.bias" not in state:
        state["patch_embed.proj.bias"] = torch.zeros(state["patch_embed.proj.weight"].shape[0])
        notes.append("no patch-embedding bias in the checkpoint: zeros")
    known = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
             "norm.weight", "norm.bias", "head.weight", "head.bias"}  # fmt: skip
    known |= {f"blocks.{i}.{n}" for i in range(depth) for n in BLOCK_KEYS}
    unknown = sorted(set(state) - known)
    if unknown:
        raise ValueError(
            f"{source}: unsupported key {unknown[0]!r} ({len(unknown)} unknown in all)"
        )
    spec = _spec(state, depth, num_heads, eps, source)
    return VitCheckpoint(spec, state, source, notes)


def _spec(state, depth: int, num_heads: int | None, eps: float, source: str) -> VitSpec:
    d, c, p, p2 = state["patch_embed.proj.weight"].shape
    tokens = state["pos_embed"].shape[1]
    grid = math.isqrt(tokens - 1)
    if p != p2 or grid * grid != tokens - 1:
        raise ValueError(
            f"{source}: pos_embed has {tokens} tokens, not 1 + g^2 (a CLS slot and a square grid)"
            " and square patches: ravit's ViT adds the position embedding to the CLS token too"
        )
    if tuple(state["cls_token"].shape) != (1, 1, d):
        raise ValueError(f"{source}: cls_token of shape {tuple(state['cls_token'].shape)}")
    heads = num_heads or max(1, d // 64)
    if d % heads:
        raise ValueError(f"{source}: width {d} is not divisible by {heads} heads")
    head = state.get("head.weight")
    return VitSpec(
        embed_dim=d,
        depth=depth,
        num_heads=heads,
        mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=p,
        image_size=grid * p,
        in_chans=c,
        num_classes=None if head is None else head.shape[0],
        layer_norm_eps=eps,
    )
