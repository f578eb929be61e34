"""`convert_run`: a RAViT started from a ViT, written as a run folder.

The folder is a normal run at epoch 0 (config.yaml, env.json, split.json,
checkpoint.pt) plus RUN/converted.json (the source, the block assignment,
the notes): eval, calibrate, control, predict and export take it as it is,
and `ravit train --init RUN` fine-tunes it into a new run. It has no
optimiser state, so it is not resumed itself.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from ravit.config import PRESETS, RunConfig, resolve_config
from ravit.convert.checkpoints import VitCheckpoint, read_vit
from ravit.convert.rules import assign_blocks
from ravit.convert.vit import checkpoint_of, ravit_config, ravit_from_vit
from ravit.data import data_info, load_data, split_indices
from ravit.runs import folder
from ravit.runs.checkpoint import save_checkpoint


def read_source(
    src: str | os.PathLike, *, num_heads: int | None = None, layer_norm_eps: float | None = None
) -> VitCheckpoint:
    """The ViT to start from: a ravit run of a plain ViT, a Hugging Face folder, or a file."""
    path = Path(src)
    if path.is_dir() and (path / folder.CONFIG).is_file():
        model, _ = folder.load_run_model(path)
        return checkpoint_of(model, str(path))
    return read_vit(path, num_heads=num_heads, layer_norm_eps=layer_norm_eps)


def _run_config(cfg, data_spec: str, val_size: float, seed: int) -> RunConfig:
    """A run config whose model section builds exactly `cfg` (every setting written out)."""
    preset = next((p.name for p in PRESETS.values()
                   if p.settings["patch_size"] == cfg.patch_size), "cifar10")  # fmt: skip
    model = {
        "preset": preset,
        "layers": cfg.layers,
        "resolutions": [b.resolution for b in cfg.branches],
        "exit_heads": [b.head for b in cfg.branches if b.depth > 0],
        **{k: getattr(cfg, k) for k in ("patch_size", "embed_dim", "num_heads", "mlp_dim",
                                         "num_classes", "in_chans", "dropout", "fused_attention",
                                         "layer_norm_eps")},
    }  # fmt: skip
    sections = {"model": model, "data": {"spec": data_spec, "val_size": val_size},
                "train": {"seed": seed}}  # fmt: skip
    return resolve_config(base=sections)


def convert_run(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    layers: str,
    data_spec: str,
    resolutions: list[int] | tuple[int, ...] | None = None,
    rule: str = "first",
    exit_heads=None,
    val_size: float = 0.1,
    seed: int = 0,
    num_heads: int | None = None,
    layer_norm_eps: float | None = None,
) -> tuple[Path, list[str]]:
    """Write the RAViT `layers` started from the ViT `src` into the new run folder `out`.

    The classes come from the data (`data_spec`): a classifier of another size
    is re-initialised, and the notes say so. Everything is checked before
    anything is written. Returns the folder and the notes.
    """
    run = Path(out)
    folder.check_new(run)
    ckpt = read_source(src, num_heads=num_heads, layer_norm_eps=layer_norm_eps)
    full = load_data(data_spec, "train")
    cfg = ravit_config(ckpt, layers, resolutions, len(full.classes), exit_heads)
    model, notes = ravit_from_vit(ckpt, cfg, rule, seed)
    run_cfg = _run_config(cfg, data_spec, val_size, seed)
    _, val_idx = split_indices(len(full), val_size, seed)
    depths = [cfg.branches[i].depth for i in cfg.present]
    blocks = assign_blocks(ckpt.spec.depth, depths, rule)
    record = {"source": str(src), "rule": rule, "blocks": blocks, "vit": asdict(ckpt.spec),
              "notes": notes}  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    folder.write_env(run, folder.environment("cpu"))
    folder.write_split(run, seed, val_idx.tolist())
    folder.write_converted(run, record)
    save_checkpoint(run / folder.CHECKPOINT, model, epoch=0, run_config=run_cfg.to_dict(),
                    data=data_info(full, data_spec))  # fmt: skip
    folder.write_config(run, run_cfg.to_dict(), cfg.to_dict())  # last: it marks a run
    return run, notes
