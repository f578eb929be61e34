"""`ravit presets` and `ravit flops`: the model presets and the analytic cost model."""

from __future__ import annotations

import argparse
import json

from ravit.cli.common import UsageError, add_model_args, model_config_from_args
from ravit.config import PRESETS, model_config
from ravit.cost import format_flops, model_cost


def add_parsers(sub) -> None:
    p = sub.add_parser("presets", help="list the model presets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("flops", help="analytic FLOPs per exit (the paper's cost model)")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--paper", action="store_true", help="reproduce the paper's FLOPs table")
    p.set_defaults(func=cmd_flops)


def cmd_presets(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps({name: p.to_dict() for name, p in PRESETS.items()}, indent=2))
        return 0
    head = f"{'preset':<14} {'image':>5} {'patch':>5} {'D':>4} {'heads':>5} {'MLP':>5} "
    head += f"{'classes':>7} {'chans':>5}  {'resolutions':<12} {'layers':<7} description"
    print(head)
    for p in PRESETS.values():
        s, res = p.settings, "/".join(map(str, p.resolutions))
        print(
            f"{p.name:<14} {s['image_size']:>5} {s['patch_size']:>5} {s['embed_dim']:>4} "
            f"{s['num_heads']:>5} {s['mlp_dim']:>5} {s['num_classes']:>7} {s['in_chans']:>5}  "
            f"{res:<12} {p.default_layers:<7} {p.description}"
        )
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    if args.paper:
        return _print_paper_table(args.json)
    if not args.preset:
        raise UsageError("ravit flops: give --preset NAME (or --paper)")
    cfg = model_config_from_args(args)
    cost = model_cost(cfg)
    if args.json:
        out = {"preset": args.preset, "layers": cfg.layers, **cost.to_dict()}
        for e in out["exits"]:  # 1-based for people, as the paper numbers branches
            e["exit"] += 1
            e["branch"] += 1
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"RAViT {cfg.layers}  (preset {args.preset}: {cfg.image_size} px, patch "
        f"{cfg.patch_size}, D {cfg.embed_dim}, MLP {cfg.mlp_dim}, {cfg.num_heads} heads)"
    )
    print(f"{'exit':>4} {'branch':>6} {'res':>5} {'layers':>6} {'tokens':>6} {'branch FLOPs':>13} "
          f"{'exit head':>11} {'head FLOPs':>11} {'cumulative':>12}")  # fmt: skip
    for e in cost.exits:
        print(
            f"{e.exit + 1:>4} {e.branch + 1:>6} {e.resolution:>5} {e.layers:>6} {e.tokens:>6} "
            f"{format_flops(e.branch_flops):>13} {e.head:>11} {format_flops(e.head_flops):>11} "
            f"{format_flops(e.cumulative_flops):>12}"
        )
    print(f"total, no early exit: {format_flops(cost.total_flops)}  ({cost.total_flops} FLOPs)")
    return 0


def _print_paper_table(as_json: bool) -> int:
    from ravit.reports.paper import PAPER_COSTS

    rows = []
    for row in PAPER_COSTS:
        cost = model_cost(model_config(row.preset, row.layers))
        ours = format_flops(cost.total_flops)
        first = format_flops(cost.exits[0].cumulative_flops) if row.first_exit else None
        ok = ours == row.flops and first == row.first_exit
        rows.append((row, ours, first, ok))
    if as_json:
        print(json.dumps([
            {"dataset": r.dataset, "model": r.model, "preset": r.preset, "layers": r.layers,
             "paper": r.flops, "ours": ours, "paper_first_exit": r.first_exit,
             "ours_first_exit": first, "match": ok}
            for r, ours, first, ok in rows
        ], indent=2))  # fmt: skip
    else:
        print(f"{'dataset':<14} {'model':<14} {'command':<48} {'paper':>9} {'ours':>9}  match")
        for r, ours, first, ok in rows:
            cmd = f"ravit flops --preset {r.preset} --layers {r.layers}"
            extra = f"  (exit 1: paper {r.first_exit}, ours {first})" if r.first_exit else ""
            print(
                f"{r.dataset:<14} {r.model:<14} {cmd:<48} {r.flops:>9} {ours:>9}  "
                f"{'yes' if ok else 'NO'}{extra}"
            )
    return 0 if all(ok for *_, ok in rows) else 1
