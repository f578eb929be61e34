"""A plain ViT in ravit, and a RAViT whose branches start from it.

`vit_model(ckpt)` is the checkpoint's ViT as ravit's plain ViT `0-L` (one
present branch at the full image): the same arithmetic, so its logits equal
the source implementation's. `ravit_from_vit(ckpt, layers)` builds a RAViT
whose branches start from the ViT (docs/from-vit.md):

- every branch copies the patch embedding, and gets the ViT's position
  embedding resampled to its own grid (bicubic, antialiased, the CLS slot
  kept, as timm's `resample_abs_pos_embed`);
- the learned CLS token is the ViT's;
- the ViT's blocks are dealt to the branches by a rule (`rules.ASSIGNMENTS`);
- the last exit's head is the ViT's final norm and classifier; the earlier
  exits' heads start fresh (their CLS tokens have seen fewer layers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ravit.config import BranchConfig, ModelConfig, parse_exit_heads, parse_layers
from ravit.convert.checkpoints import VitCheckpoint
from ravit.convert.rules import assign_blocks
from ravit.models import RAViT


def vit_config(ckpt: VitCheckpoint, num_classes: int | None = None) -> ModelConfig:
    """The plain ViT `0-L` (or `L`, when halving the image leaves no patch grid)."""
    s = ckpt.spec
    classes = num_classes or s.num_classes
    if classes is None:
        raise ValueError(f"{ckpt.source} has no classifier head: give the number of classes")
    half = s.image_size // 2 // s.patch_size * s.patch_size
    branches = [BranchConfig(s.image_size, s.depth)]
    if s.patch_size <= half < s.image_size:
        branches.insert(0, BranchConfig(half, 0))
    return _config(ckpt, tuple(branches), classes)


def _config(ckpt: VitCheckpoint, branches: tuple, num_classes: int) -> ModelConfig:
    s = ckpt.spec
    return ModelConfig(
        image_size=s.image_size, patch_size=s.patch_size, embed_dim=s.embed_dim,
        num_heads=s.num_heads, mlp_dim=s.mlp_dim, num_classes=num_classes, branches=branches,
        in_chans=s.in_chans, layer_norm_eps=s.layer_norm_eps,
    )  # fmt: skip


def ravit_config(
    ckpt: VitCheckpoint,
    layers: str,
    resolutions: tuple[int, ...] | list[int] | None = None,
    num_classes: int | None = None,
    exit_heads=None,
) -> ModelConfig:
    """A RAViT of the ViT's width, heads and patch: `layers` per branch, the last branch at
    the ViT's image size; resolutions halve from it by default."""
    s = ckpt.spec
    depths = parse_layers(layers)
    if resolutions is None:
        resolutions = [
            max(
                s.patch_size, (s.image_size >> (len(depths) - 1 - i)) // s.patch_size * s.patch_size
            )
            for i in range(len(depths))
        ]
    resolutions = tuple(int(r) for r in resolutions)
    if len(resolutions) != len(depths):
        raise ValueError(f"{len(resolutions)} resolutions for {len(depths)} branches ({layers})")
    if resolutions[-1] != s.image_size:
        raise ValueError(
            f"the last branch must see the ViT's image, {s.image_size} px, not {resolutions[-1]}"
        )
    classes = num_classes or s.num_classes
    if classes is None:
        raise ValueError(f"{ckpt.source} has no classifier head: give the number of classes")
    heads = parse_exit_heads(exit_heads, depths)
    branches = tuple(BranchConfig(r, d, h) for r, d, h in zip(resolutions, depths, heads))
    return _config(ckpt, branches, classes)


def resample_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g^2, D) -> (1, 1 + grid^2, D): the CLS slot kept, the g x g grid resized
    (bicubic, antialiased, half-pixel centres; timm's resample_abs_pos_embed)."""
    cls, patches = pos[:, :1], pos[:, 1:]
    g = int(round(patches.shape[1] ** 0.5))
    if g == grid:
        return pos.clone()
    d = pos.shape[-1]
    # (1, g^2, D) -> (1, g, g, D) -> (1, D, g, g): resize -> (1, D, grid, grid) -> (1, grid^2, D)
    x = patches.reshape(1, g, g, d).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    x = x.permute(0, 2, 3, 1).reshape(1, grid * grid, d).to(pos.dtype)
    return torch.cat([cls, x], dim=1)


def ravit_from_vit(
    ckpt: VitCheckpoint,
    cfg: ModelConfig,
    rule: str = "first",
    seed: int = 0,
) -> tuple[RAViT, list[str]]:
    """The RAViT `cfg` started from the ViT (see the module doc); returns it and notes.

    What starts fresh (the earlier exits' heads, a classifier whose class count
    differs from the checkpoint's) is drawn from `seed`, so a conversion is
    reproducible; the global random state is left as it was.
    """
    s, state = ckpt.spec, ckpt.state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RAViT(cfg)
    own = model.state_dict()
    depths = [cfg.branches[i].depth for i in cfg.present]
    blocks = assign_blocks(s.depth, depths, rule)
    new = {"cls_token": state["cls_token"][0]}  # (1, 1, D) -> (1, D)
    for e, (i, taken) in enumerate(zip(cfg.present, blocks)):
        grid = cfg.branches[i].resolution // cfg.patch_size
        new[f"branches.{e}.pos_embed"] = resample_pos_embed(state["pos_embed"], grid)
        for p in ("weight", "bias"):
            new[f"branches.{e}.patch_embed.proj.{p}"] = state[f"patch_embed.proj.{p}"]
        for j, b in enumerate(taken):
            for name in _block_names(state, b):
                new[f"branches.{e}.blocks.{j}.{name}"] = state[f"blocks.{b}.{name}"]
    last = len(cfg.present) - 1
    notes = list(ckpt.notes)
    if cfg.exit_heads[-1] != "linear":
        notes.append(f"the last exit's head is {cfg.exit_heads[-1]!r}: it starts fresh")
    else:
        new[f"heads.{last}.norm.weight"] = state["norm.weight"]
        new[f"heads.{last}.norm.bias"] = state["norm.bias"]
        if s.num_classes == cfg.num_classes:
            new[f"heads.{last}.fc.weight"] = state["head.weight"]
            new[f"heads.{last}.fc.bias"] = state["head.bias"]
        else:
            notes.append(
                f"the classifier is re-initialised: {cfg.num_classes} classes, the checkpoint "
                f"has {s.num_classes or 'no head'}"
            )
    for key, value in new.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{key}: the checkpoint's {tuple(value.shape)} does not fit "
                             f"{tuple(own[key].shape)}")  # fmt: skip
        own[key] = value.to(own[key].dtype)
    model.load_state_dict(own)
    return model.eval(), notes


def _block_names(state: dict, b: int) -> list[str]:
    prefix = f"blocks.{b}."
    return [k[len(prefix) :] for k in state if k.startswith(prefix)]


def vit_model(ckpt: VitCheckpoint, num_classes: int | None = None) -> tuple[RAViT, list[str]]:
    """The checkpoint's ViT as ravit's plain ViT, weights and all (eval mode)."""
    return ravit_from_vit(ckpt, vit_config(ckpt, num_classes), "first")


def checkpoint_of(model: RAViT, source: str) -> VitCheckpoint:
    """A plain ViT that ravit trained (one exit, linear head) as a timm-layout checkpoint."""
    from ravit.convert.checkpoints import VitSpec

    cfg = model.cfg
    if cfg.num_exits != 1 or cfg.exit_heads != ("linear",):
        raise ValueError(
            f"{source} is RAViT {cfg.layers} with heads {list(cfg.exit_heads)}: a plain ViT "
            "(one branch with layers, linear head) is what a RAViT is converted from"
        )
    own = model.state_dict()
    state = {
        k.removeprefix("branches.0."): v for k, v in own.items() if k.startswith("branches.0.")
    }
    state["cls_token"] = own["cls_token"][None]  # (1, D) -> (1, 1, D)
    for ours, timm in (("norm", "norm"), ("fc", "head")):
        for p in ("weight", "bias"):
            state[f"{timm}.{p}"] = own[f"heads.0.{ours}.{p}"]
    b = cfg.branches[cfg.present[0]]
    spec = VitSpec(cfg.embed_dim, b.depth, cfg.num_heads, cfg.mlp_dim, cfg.patch_size,
                   b.resolution, cfg.in_chans, cfg.num_classes, cfg.layer_norm_eps)  # fmt: skip
    return VitCheckpoint(spec, state, source)
