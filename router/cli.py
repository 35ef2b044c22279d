"""Command line: serve, check-config, routes test. Parses arguments and calls into the app."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from router import __version__
from router.config import RouterConfig, config_notes, load_config
from router.errors import ConfigError, MatcherError
from router.logs import configure
from router.matchers import MatchType, parse_matcher
from router.routing import Route, explain, match_receivers


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _load(path: str) -> RouterConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        _err(f"{path}: {len(exc.problems)} problem(s):")
        for problem in exc.problems:
            _err(f"  {problem}")
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    """`serve`: run the router until SIGTERM/SIGINT; the exit code (1: could not start)."""
    from router.app import serve

    configure(args.log_format, args.log_level)
    config = _load(args.config)
    if config is None:
        return 1
    try:
        return serve(config, config_path=args.config, listen=args.listen, dry_run=args.dry_run)
    except ConfigError as exc:
        for problem in exc.problems:
            _err(str(problem))
        return 1


def cmd_check_config(args: argparse.Namespace) -> int:
    """`check-config FILE...`: 0 if every file is valid, else 1 with every problem printed."""
    status = 0
    for path in args.files:
        config = _load(path)
        if config is None:
            status = 1
            continue
        receivers = len(config.receivers)
        channels = sum(1 for r in config.receivers for _ in r.channels())
        _out(
            f"{path}: OK: {receivers} receiver(s), {channels} channel config(s), "
            f"{len(config.inhibit_rules)} inhibit rule(s), {len(config.runbooks)} runbook rule(s)"
        )
        for note in config_notes(config):
            _out(f"  note: {note}")
    return status


def cmd_routes_test(args: argparse.Namespace) -> int:
    """`routes test NAME=VALUE...`: print the receivers, as amtool does; 1 on a bad label."""
    config = _load(args.config)
    if config is None:
        return 1
    labels: dict[str, str] = {}
    for text in args.labels:
        try:
            m = parse_matcher(text)
        except MatcherError as exc:
            _err(f"{text}: {exc}")
            return 1
        if m.type is not MatchType.EQUAL:
            _err(f"{text}: labels must be given as name=value pairs")
            return 1
        labels[m.name] = m.value
    root = Route.from_config(config.route)
    if args.explain:
        for line in explain(root, labels):
            _out(line)
    _out(",".join(match_receivers(root, labels)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `alert-router` and its commands."""
    parser = argparse.ArgumentParser(
        prog="alert-router",
        description="Alertmanager webhook router: routing, inhibition, enrichment and durable "
        "delivery to Telegram, Slack, email and PagerDuty.",
    )
    parser.add_argument("--version", action="version", version=f"alert-router {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the webhook server",
        description="Accept Alertmanager webhooks and deliver notifications.",
    )
    serve.add_argument(
        "--config", default="routes.yaml", help="routes.yaml to load (default: %(default)s)"
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="override server.listen")
    serve.add_argument(
        "--dry-run",
        action="store_true",
        help="render each notification with its channel's templates and log it instead of sending",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text for a terminal, json for containers (default: %(default)s)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser(
        "check-config",
        help="validate routes.yaml files",
        description="Validate routes.yaml files; exit 0 if all are valid, "
        "1 with every problem listed (file:line: key path: what is wrong).",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=cmd_check_config)

    routes = sub.add_parser("routes", help="inspect the route tree")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True, metavar="SUBCOMMAND")
    test = routes_sub.add_parser(
        "test",
        help="print the receivers an alert with these labels goes to",
        description="Print the receivers for a label set, comma-separated, exactly as "
        "`amtool config routes test` prints them.",
        epilog="example: alert-router routes test --config routes.yaml severity=critical service=api",
    )
    test.add_argument(
        "--config", default="routes.yaml", help="routes.yaml to load (default: %(default)s)"
    )
    test.add_argument(
        "--explain",
        action="store_true",
        help="show the path taken and why each route did or did not match",
    )
    test.add_argument("labels", nargs="*", metavar="NAME=VALUE")
    test.set_defaults(func=cmd_routes_test)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv) and run the command; its exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
