"""streamscope's command line: ``python -m streamscope COMMAND``.

python -m streamscope export-dashboards DIR [--force]   # write the dashboards, provisioning and alert files
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from streamscope import _export_dashboards


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m streamscope`` parser, one subcommand per command."""
    parser = argparse.ArgumentParser(prog="python -m streamscope", description="streamscope's command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export-dashboards",
        help="write the Grafana dashboards, provisioning files and alert rules to a folder",
        description=_export_dashboards.DESCRIPTION,
        epilog=_export_dashboards.EPILOG,
    )
    _export_dashboards.configure_parser(export)
    export.set_defaults(handler=_export_dashboards.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command and return its exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
