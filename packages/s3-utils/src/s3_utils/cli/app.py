"""``s3ckpt``: the argument parser, the dispatch to one module per subcommand, and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence

from s3_utils import __version__
from s3_utils.cli import bench, cleanup, convert, cp, exit_codes, ls, rm, verify
from s3_utils.cli.console import Console, UsageError
from s3_utils.errors import S3AccessDeniedError, S3ConfigError, S3Error, S3NotFoundError

Command = Callable[[argparse.Namespace, Console], int]

_DESCRIPTION = """\
Inspect, copy, clean up, benchmark, verify and convert checkpoints in S3.

Credentials, region and endpoint come from the usual AWS settings (environment variables such as
AWS_PROFILE, AWS_REGION and AWS_ENDPOINT_URL, the AWS config files, or an instance role), or from the
options below.
"""

_EPILOG = """\
exit codes: 0 ok, 1 operational failure, 2 usage error, 3 not found, 4 verify found a bad checkpoint,
130 interrupted
"""


def build_parser() -> argparse.ArgumentParser:
    """The full ``s3ckpt`` parser, every subcommand with its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="s3ckpt",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--endpoint-url", help="S3 endpoint, e.g. http://127.0.0.1:9000 (default: AWS)")
    parser.add_argument("--region", help="AWS region (default: from the environment / profile)")
    parser.add_argument("--profile", help="named profile from the AWS config files")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw transfer progress on stderr (default: only when stderr is a terminal)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (ls, cp, rm, cleanup, bench, verify, convert):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run ``s3ckpt`` with ``argv`` and return its exit code (see :mod:`s3_utils.cli.exit_codes`).

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` by default.
        console: the streams to use; the process's own by default.

    Returns:
        The exit code.
    """
    console = console or Console()
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(console.out), contextlib.redirect_stderr(console.err):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 0 after --help, 2 on a bad command line
        return exc.code if isinstance(exc.code, int) else exit_codes.USAGE
    console.progress = args.progress
    root = logging.getLogger()
    root_level = root.level
    handler = _log_handler(args.verbose, console)
    command: Command = args.run
    try:
        return command(args, console)
    except KeyboardInterrupt:
        console.note("s3ckpt: interrupted")
        return exit_codes.INTERRUPTED
    except (UsageError, S3ConfigError) as exc:
        console.note(f"s3ckpt {args.command}: error: {exc}")
        return exit_codes.USAGE
    except (S3NotFoundError, FileNotFoundError) as exc:
        console.note(f"s3ckpt {args.command}: not found: {_describe(exc)}")
        return exit_codes.NOT_FOUND
    except S3AccessDeniedError as exc:
        console.note(f"s3ckpt {args.command}: access denied: {exc}")
        return exit_codes.FAILURE
    except (S3Error, OSError) as exc:
        console.note(f"s3ckpt {args.command}: failed: {_describe(exc)}")
        return exit_codes.FAILURE
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)


def run() -> None:
    """Console-script entry point: ``sys.exit(main())``."""
    sys.exit(main())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, S3Error) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


def _log_handler(verbosity: int, console: Console) -> logging.Handler:
    """Send log records to ``console.err`` for the duration of one command."""
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(console.err)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    return handler
