"""The `ravit` command line: the only place that parses argv, prints and picks exit codes.

One module per command group (`info`, `train`, `convert`, `evaluate`,
`deploy`, `experiments`), each adding its parsers, and `common` for what they share.
`main(argv)` returns an exit code and never raises for bad input, so tests
drive the real CLI in-process. Bad input ends with one line on stderr,
"ravit: error: ...", and exit code 2. Library code raises typed errors
(ValueError, TypeError, OSError) and never imports this package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ravit.cli import convert, deploy, evaluate, experiments, info, train
from ravit.cli.common import EXIT_USAGE, Parser, UsageError
from ravit.errors import Interrupted

__all__ = ["UsageError", "build_parser", "entry", "main"]

GROUPS = (
    info,
    train,
    convert,
    evaluate,
    deploy,
    experiments,
)  # in the order `ravit --help` lists them


def build_parser() -> Parser:
    parser = Parser(
        prog="ravit",
        description="RAViT: Resolution-Adaptive Vision Transformer with early exits.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except Interrupted as err:  # SIGINT / SIGTERM: stopped at a step boundary, resumable
        command = getattr(args, "command", "train")
        how = f"ravit {command if command == 'distill' else 'train'} --resume {err.run}"
        if command == "suite":
            how = "the same ravit suite command (it resumes unfinished runs)"
        print(f"ravit: {err}; resume with: {how}", file=sys.stderr)
        return 128 + err.signum  # 130 for SIGINT, 143 for SIGTERM
    except UsageError as err:
        return _fail(str(err))
    except BrokenPipeError:  # `ravit ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, FloatingPointError) as err:
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
    """Console-script entry point (`ravit`, `python -m ravit`).

    First re-executes the process with glibc malloc settings that keep freed
    tensor memory in the process (up to 1.6x faster on CPU, see
    ravit.allocator); RAVIT_NO_MALLOC_TUNING=1 opts out.
    """
    from ravit.allocator import reexec_with_tuned_allocator

    reexec_with_tuned_allocator()
    sys.exit(main())
