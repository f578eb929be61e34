"""Start from a ViT: load timm and Hugging Face ViT checkpoints, turn a ViT into a RAViT.

- `read_vit(src)`: a checkpoint file in timm's layout or a Hugging Face ViT
  folder, checked key by key (`checkpoints`).
- `vit_model(ckpt)`: that ViT as ravit's plain ViT; `ravit_config` and
  `ravit_from_vit(ckpt, cfg, rule)`: a RAViT whose branches start from it (`vit`).
- `convert_run(src, out, ...)`: the RAViT as a run folder that eval, calibrate,
  predict, export and `ravit train --init` take (`run`).

docs/from-vit.md has the rules and the commands.
"""

from ravit._lazy import lazy_exports

__all__ = lazy_exports(
    __name__,
    {
        "checkpoints": ["VitCheckpoint", "VitSpec", "read_vit"],
        "rules": ["ASSIGNMENTS", "assign_blocks"],
        "run": ["convert_run", "read_source"],
        "vit": ["ravit_config", "ravit_from_vit", "vit_model"],
    },
)
