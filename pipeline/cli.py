"""`clinfuse` command line (also `python -m clinfuse.pipeline`).

Each command is one module in `pipeline/commands/` exposing `NAME`, `HELP`,
`add_arguments(parser)` and `run(args) -> int`; adding a command is adding a
file. Expected errors (`ClinfuseError`) print one line and exit 2; `--debug`
shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from clinfuse.etl.errors import ClinfuseError, ConfigError

from . import commands

EXIT_USER_ERROR = 2
DEFAULT_PARAMS = "params.yaml"
MAX_ERROR_CHARS = 1000  # an error is one line a person reads, whatever value or file it quotes


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`message` on one line, cut to `limit` characters (saying how much was cut)."""
    text = " ".join(str(message).split())
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit:,} more characters)"
    return text


def _quiet_third_party() -> None:
    # Clinical environments forbid unexpected network traffic: no telemetry.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clinfuse",
        description="Clinical multimodal fusion pipeline: synthetic exports, ETL, MASAM training, "
        "evaluation and reports. Paths default to params.yaml.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--params", default=None,
                        help="params file (default: params.yaml, all defaults if absent; a named file must exist)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for module in _command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    _quiet_third_party()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a command may start itself again (torchrun)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        if args.params is None:
            args.params = DEFAULT_PARAMS
        elif not os.path.isfile(args.params):
            # an explicit file that is not there must not silently fall back to the defaults
            raise ConfigError(f"--params {args.params}: params file not found")
        return int(args._run(args) or 0)
    except ClinfuseError as exc:
        if args.debug:
            raise
        print(one_line(f"clinfuse {args.command}: error: {exc}"), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
