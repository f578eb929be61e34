"""What every command shares: the parser class, usage errors, value parsers, the model
flags (read off the one declaration of each setting, `ravit.config.section_settings`)
and the train flags."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from ravit.config import EXIT_HEADS, PRESETS, ModelConfig, Setting, model_config_from
from ravit.config import section_settings as _section_settings

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would sys.exit(2) itself
        raise UsageError(f"{self.prog}: {message}")


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, e.g. 16,32; got {text!r}"
        ) from None


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, e.g. 0.05 or 0.1,0.2; got {text!r}"
        ) from None


def name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


# -- the model flags: one per declared setting that has a flag ---------------------

MODEL_FLAGS: tuple[Setting, ...] = tuple(s for s in _section_settings() if s.flag)
_CHOICES = {"preset": tuple(PRESETS), "exit_heads": EXIT_HEADS}  # listed in the help
_PARSERS = {int: int, float: float, str: str, list[int]: int_list, list[str]: name_list}


def _value_type(kind: Any) -> Any:
    """int for `int | None`, list[int] for `list[int] | None`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    for s in MODEL_FLAGS:
        choices = _CHOICES.get(s.name)
        text = f"{s.help}: {', '.join(choices)}" if choices else s.help
        g.add_argument(s.flag, dest=s.name, type=_PARSERS[_value_type(s.type)], help=text)


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    return model_config_from({s.name: getattr(args, s.name) for s in MODEL_FLAGS})


# -- train flags: shorthands for run-config keys ------------------------------------

TRAIN_FLAGS = {  # flag dest -> config key (flags are shorthands for key=value)
    **{s.name: f"model.{s.name}" for s in MODEL_FLAGS},
    "data": "data.spec",
    "val_size": "data.val_size",
    "train_size": "data.train_size",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum",
    "compile": "train.compile",
    "workers": "data.workers",
    "lr": "train.lr",
    "seed": "train.seed",
    "device": "train.device",
    "amp": "train.amp",
}


def flag_updates(args: argparse.Namespace) -> dict[str, dict]:
    """The run-config sections the given flags set, e.g. {"train": {"epochs": 3}}."""
    updates: dict[str, dict] = {}
    for dest, key in TRAIN_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            section, name = key.split(".")
            updates.setdefault(section, {})[name] = (
                list(value) if isinstance(value, tuple) else value
            )
    return updates


def resume_overrides(
    args: argparse.Namespace, command: str, *, also_fixed: bool = False, why: str = ""
) -> list[str]:
    """The key=value overrides of a resumed run: only train settings may change.

    also_fixed: the command gave other settings that are fixed on resume (why says where
    they are kept).
    """
    flags = flag_updates(args)
    if set(flags) - {"train"} or args.config or also_fixed:
        raise UsageError(
            f"ravit {command} --resume RUN: only train settings may change on resume{why}"
        )
    return [f"train.{k}={v}" for k, v in flags.get("train", {}).items()] + args.overrides


def print_epoch(record: dict) -> None:
    acc = "/".join(f"{100 * a:.1f}" for a in record["train_acc_exits"])
    line = (
        f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  train acc % {acc}"
        f"  lr {record['lr']:.2e}  {record['images_per_s']:.0f} img/s"
    )
    if "val_acc_exits" in record:
        line += "  val acc % " + "/".join(f"{100 * a:.1f}" for a in record["val_acc_exits"])
    if record.get("dropped_files"):
        line += f"  ({record['dropped_files']} unreadable files left out)"
    print(line, flush=True)


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """--device and --amp of the commands that run a trained model."""
    from ravit.config.run import AMP_MODES

    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--amp", choices=AMP_MODES, default="auto",
                   help="precision of the forward: auto (bf16 where it is faster: CUDA, or a "
                        "CPU with AMX / AVX-512 BF16 and a wide enough model), off (fp32), "
                        "bf16, fp16; docs/training.md")  # fmt: skip
