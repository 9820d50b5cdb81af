"""The `drivecast` command: a thin shell over the stage functions.

    drivecast run CONFIG [key.sub=value ...] [--force]      all stages in order
    drivecast ingest|train|... CONFIG [overrides] [--force] one stage (and what it needs)
    drivecast iterate CONFIG [overrides] [--force]          the loop: collect, retrain, repeat
    drivecast replay CONFIG [overrides] [--force]           the decision rule on held-out
                                                            labelled decisions
    drivecast gridworld [CONFIG] [overrides] [--force]      the counting world-model example
    drivecast bench ingest|planner|backend|actor [CONFIG] [...]  benchmarks
    drivecast config [CONFIG] [overrides]                   the resolved config, as YAML
    drivecast config --reference                            every config field, as Markdown
    drivecast report [CONFIG ...] [overrides] [--readme F]  the headline results tables
    drivecast pictures CONFIG [overrides] [--out DIR]       still frames of a run's pictures

An argument holding `=` is always an override, never the config path. Bad input (unknown
key, wrong type, missing file, corrupt data) ends with one line on stderr and exit code 2.

Each verb's subparser names its handler (`set_defaults(handler=...)`): a new verb is one
`_*_verb` function adding its parser and one handler calling into pipeline/commands.py.
"""

from __future__ import annotations

import argparse
import errno
import sys

from pipeline.errors import DrivecastError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

OVERRIDES_HELP = "dotted overrides, e.g. ingest.episodes=4 (an argument with = is one)"


def build_parser() -> argparse.ArgumentParser:
    from pipeline.stages import STAGE_NAMES

    parser = argparse.ArgumentParser(prog="drivecast", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _required_config(sub.add_parser("run", help="run every stage in order"), _stages)
    for name in STAGE_NAMES:
        _required_config(sub.add_parser(name, help=f"run the {name} stage (and the stages "
                                        "it needs)"), _stages)
    _required_config(sub.add_parser("iterate", help="the model-based loop: collect with the "
                                    "planner, retrain, repeat (iterate.rounds rounds)"), _iterate)
    _required_config(sub.add_parser("replay", help="the decision rule on the critic's held-out "
                                    "labelled decisions, for a grid of risk budgets and lambdas"),
                     _replay)
    _gridworld_verb(sub)
    _bench_verb(sub)
    _config_verb(sub)
    _report_verb(sub)
    _pictures_verb(sub)
    return parser


def _required_config(parser: argparse.ArgumentParser, handler) -> None:
    """CONFIG [overrides] [--force]: a verb that needs a config file."""
    parser.add_argument("config", help="YAML config, e.g. configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    _force_flag(parser)
    parser.set_defaults(handler=handler, config_optional=False)


def _optional_config(parser: argparse.ArgumentParser, handler) -> None:
    """[CONFIG] [overrides]: without a config file the defaults apply."""
    parser.add_argument("config", nargs="?", default=None,
                        help="YAML config (default: the built-in defaults)")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    parser.set_defaults(handler=handler, config_optional=True)


def _force_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="recompute the stage(s) even if a complete directory exists")


def _gridworld_verb(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gridworld", help="the slippery-gridworld counting example")
    _optional_config(parser, _gridworld)
    _force_flag(parser)


def _bench_verb(sub: argparse._SubParsersAction) -> None:
    from pipeline.bench import BENCHMARKS

    parser = sub.add_parser("bench", help="benchmarks (figures as ratios to a baseline)")
    parser.add_argument("which", choices=sorted(BENCHMARKS), help="what to measure")
    _optional_config(parser, _bench)


def _config_verb(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="print the resolved config as YAML, or the "
                            "reference of every config field (--reference)")
    _optional_config(parser, _config)
    parser.add_argument("--reference", action="store_true",
                        help="print the Markdown reference of every section and field "
                        "(docs/configuration.md)")


def _report_verb(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="record each config's stage summaries in the "
                            "results folder, then print the headline tables of every record")
    parser.add_argument("args", nargs="*", metavar="CONFIG|override",
                        help="configs whose complete runs to record (none: only print), and "
                        f"{OVERRIDES_HELP}")
    parser.add_argument("--results", default="docs/results",
                        help="folder of the results records (default: docs/results)")
    parser.add_argument("--readme", default=None,
                        help="also rewrite this file's results block (e.g. README.md)")
    parser.set_defaults(handler=_report)


def _pictures_verb(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("pictures", help="PNG stills of the imagination and planner-view "
                            "pictures of a config's complete run (docs/pictures.md)")
    parser.add_argument("config", help="YAML config, e.g. configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    parser.add_argument("--out", default="docs/pictures",
                        help="folder to write the PNGs to (default: docs/pictures)")
    parser.set_defaults(handler=_pictures, config_optional=False)


# ---------------------------------------------------------------- handlers


def _stages(args: argparse.Namespace) -> int:
    from pipeline import commands

    return commands.stages(args.command, args.config, args.overrides, args.force)


def _iterate(args: argparse.Namespace) -> int:
    from pipeline import commands

    return commands.iterate(args.config, args.overrides, args.force)


def _replay(args: argparse.Namespace) -> int:
    from pipeline import commands

    return commands.replay(args.config, args.overrides, args.force)


def _gridworld(args: argparse.Namespace) -> int:
    from pipeline import commands

    return commands.gridworld(args.config, args.overrides, args.force)


def _bench(args: argparse.Namespace) -> int:
    from pipeline import commands

    return commands.bench(args.which, args.config, args.overrides)


def _config(args: argparse.Namespace) -> int:
    from pipeline import commands

    return commands.config(args.config, args.overrides, args.reference)


def _pictures(args: argparse.Namespace) -> int:
    from pipeline import commands

    return commands.pictures(args.config, args.overrides, args.out)


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.report import report

    configs = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    readme = Path(args.readme) if args.readme else None
    print(report(configs, overrides, Path(args.results), readme), end="")
    return 0


# ---------------------------------------------------------------- entry point


def place_overrides(args: argparse.Namespace) -> None:
    """An argument holding `=` is an override: where the config is optional it joins the
    overrides (argparse took it for the config); where it is required, it is refused."""
    config = getattr(args, "config", None)
    if config is None or "=" not in config:
        return
    if not args.config_optional:
        from pipeline.config import ConfigError

        raise ConfigError(f"'{config}' is an override, but drivecast {args.command} needs a "
                          f"config file first: drivecast {args.command} CONFIG [key.sub=value ...]")
    args.overrides = [config, *args.overrides]
    args.config = None


def dispatch(args: argparse.Namespace) -> int:
    place_overrides(args)
    return args.handler(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return dispatch(args)
    except DrivecastError as err:
        print(f"drivecast: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # the filesystem refused: permissions, a file in the way, full disk
        print(f"drivecast: error: {os_error_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("drivecast: interrupted; finished work is kept and reused on the next run",
              file=sys.stderr)
        return EXIT_INTERRUPTED


OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space and run again (finished work is kept)",
    errno.EDQUOT: "free some space and run again (finished work is kept)",
    errno.EACCES: "check its permissions or set workdir= to a writable folder",
    errno.EPERM: "check its permissions or set workdir= to a writable folder",
    errno.EROFS: "set workdir= to a writable folder",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EEXIST: "a file is in the way: move it, or set workdir= elsewhere",
}


def os_error_line(err: OSError) -> str:
    """One line for a filesystem error: the path, what went wrong and what to do."""
    what = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]
    where = f"{err.filename}: " if err.filename else ""
    hint = OS_ERROR_HINTS.get(err.errno)
    return f"{where}{what}" + (f"; {hint}" if hint else "")
