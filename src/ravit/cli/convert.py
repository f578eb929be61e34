"""`ravit convert`: a RAViT started from a ViT (timm file, Hugging Face folder, ravit run)."""

from __future__ import annotations

import argparse

from ravit.cli.common import int_list, name_list
from ravit.cost import format_flops, model_cost


def add_parsers(sub) -> None:
    from ravit.convert.rules import ASSIGNMENTS

    p = sub.add_parser("convert", help="start a RAViT from a ViT checkpoint (timm, Hugging Face)")
    p.add_argument("source", metavar="SRC",
                   help="a checkpoint in timm's layout (.safetensors, .pth, .bin), a Hugging "
                        "Face ViT folder, or a ravit run of a plain ViT")  # fmt: skip
    p.add_argument("--layers", required=True, help="layers per branch, e.g. 1-3 or 1-1-8")
    p.add_argument("--resolutions", type=int_list, help="one side per branch (default: halving)")
    p.add_argument("--rule", choices=ASSIGNMENTS, default="first",
                   help="which ViT blocks start each branch (docs/from-vit.md)")  # fmt: skip
    p.add_argument("--exit-heads", type=name_list, help="exit head per exit (default linear)")
    p.add_argument("--data", required=True, help="the data the RAViT is for (its classes)")
    p.add_argument("--val-size", type=float, default=0.1, help="validation split (default 0.1)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the validation split and of the heads that start fresh",
    )
    p.add_argument("--heads", type=int, dest="num_heads",
                   help="attention heads, for a timm file (default: width / 64)")  # fmt: skip
    p.add_argument(
        "--layer-norm-eps",
        type=float,
        help="LayerNorm epsilon (default: Hugging Face's config, else timm's 1e-6)",
    )
    p.add_argument("--out", required=True, help="new run folder")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from ravit.convert.run import convert_run
    from ravit.runs.folder import load_run_model, read_converted

    run, notes = convert_run(
        args.source, args.out, layers=args.layers, data_spec=args.data,
        resolutions=args.resolutions, rule=args.rule, exit_heads=args.exit_heads,
        val_size=args.val_size, seed=args.seed, num_heads=args.num_heads,
        layer_norm_eps=args.layer_norm_eps,
    )  # fmt: skip
    model, _ = load_run_model(run)
    record = read_converted(run)
    vit = record["vit"]
    print(f"{args.source}: ViT of {vit['depth']} layers, D {vit['embed_dim']}, {vit['num_heads']} "
          f"heads, {vit['image_size']} px, patch {vit['patch_size']}")  # fmt: skip
    cost = model_cost(model.cfg)
    for e, blocks in zip(cost.exits, record["blocks"]):
        print(f"  exit {e.exit + 1}: {e.resolution} px, ViT blocks {blocks}, "
              f"{format_flops(e.cumulative_flops)} cumulative")  # fmt: skip
    for note in notes:
        print(f"  note: {note}")
    print(f"RAViT {model.cfg.layers} saved in {run} (epoch 0): fine-tune it with "
          f"ravit train --init {run} --out NEW --epochs N")  # fmt: skip
    return 0
