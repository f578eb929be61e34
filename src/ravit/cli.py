"""The `ravit` command line: the only place that parses argv, prints and exits.

`main(argv)` returns an exit code and never raises for bad input, so tests
drive the real CLI in-process. Bad input ends with one line on stderr,
"ravit: error: ...", and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from ravit.config import PRESETS, ModelConfig, model_config
from ravit.cost import format_flops, model_cost

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would sys.exit(2) itself
        raise UsageError(f"{self.prog}: {message}")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, e.g. 16,32; got {text!r}"
        ) from None


def add_model_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--preset", required=required, help=f"one of: {', '.join(PRESETS)}")
    g.add_argument("--layers", help="layers per branch, e.g. 1-3, 2-0-3, 0-4 (plain ViT)")
    g.add_argument("--resolutions", type=_int_list, help="one side per branch, e.g. 16,32")
    g.add_argument("--heads", type=int, dest="num_heads", help="attention heads")
    g.add_argument("--mlp-dim", type=int, help="MLP hidden size (default 4 x embed dim)")
    g.add_argument("--embed-dim", type=int, help="embedding dimension D")
    g.add_argument("--num-classes", type=int, help="number of classes")


def model_config_from_args(args: argparse.Namespace, **extra) -> ModelConfig:
    return model_config(
        args.preset,
        args.layers,
        resolutions=args.resolutions,
        num_heads=args.num_heads,
        mlp_dim=args.mlp_dim,
        embed_dim=args.embed_dim,
        num_classes=args.num_classes,
        **extra,
    )


# -- presets ------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps({name: _preset_dict(p) for name, p in PRESETS.items()}, indent=2))
        return 0
    head = f"{'preset':<14} {'image':>5} {'patch':>5} {'D':>4} {'heads':>5} {'MLP':>5} "
    head += f"{'classes':>7} {'chans':>5}  {'resolutions':<12} {'layers':<7} description"
    print(head)
    for p in PRESETS.values():
        res = "/".join(map(str, p.resolutions))
        print(
            f"{p.name:<14} {p.image_size:>5} {p.patch_size:>5} {p.embed_dim:>4} "
            f"{p.num_heads:>5} {p.mlp_dim:>5} {p.num_classes:>7} {p.in_chans:>5}  "
            f"{res:<12} {p.default_layers:<7} {p.description}"
        )
    return 0


def _preset_dict(p) -> dict:
    return {
        "image_size": p.image_size,
        "patch_size": p.patch_size,
        "embed_dim": p.embed_dim,
        "num_heads": p.num_heads,
        "mlp_dim": p.mlp_dim,
        "num_classes": p.num_classes,
        "in_chans": p.in_chans,
        "resolutions": list(p.resolutions),
        "default_layers": p.default_layers,
        "description": p.description,
    }


# -- flops --------------------------------------------------------------------


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
    print(f"{'exit':>4} {'branch':>6} {'res':>5} {'layers':>6} {'tokens':>6} "
          f"{'branch FLOPs':>13} {'cumulative':>12}")  # fmt: skip
    for e in cost.exits:
        print(
            f"{e.exit + 1:>4} {e.branch + 1:>6} {e.resolution:>5} {e.layers:>6} {e.tokens:>6} "
            f"{format_flops(e.branch_flops):>13} {format_flops(e.cumulative_flops):>12}"
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


# -- parser and entry points ----------------------------------------------------

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ravit",
        description="RAViT: Resolution-Adaptive Vision Transformer with early exits.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("presets", help="list the model presets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("flops", help="analytic FLOPs per exit (the paper's cost model)")
    add_model_args(p, required=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--paper", action="store_true", help="reproduce the paper's FLOPs table")
    p.set_defaults(func=cmd_flops)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except UsageError as err:
        return _fail(str(err))
    except (ValueError, TypeError, OSError) as err:
        if os.environ.get("RAVIT_DEBUG"):
            raise
        return _fail(str(err))
    except KeyboardInterrupt:
        print("ravit: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"ravit: error: {line}", file=sys.stderr)
    return EXIT_USAGE


def entry() -> None:
    """Console-script entry point (`ravit`, `python -m ravit`)."""
    sys.exit(main())
