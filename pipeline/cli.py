"""The `drivecast` command: a thin shell over the stage functions.

    drivecast run CONFIG [key.sub=value ...] [--force]      all stages in order
    drivecast ingest|train|... CONFIG [overrides] [--force] one stage (and what it needs)
    drivecast iterate CONFIG [overrides] [--force]          the loop: collect, retrain, repeat
    drivecast replay CONFIG [overrides] [--force]           the decision rule on held-out
                                                            labelled decisions
    drivecast gridworld [CONFIG] [overrides]                 the counting world-model example
    drivecast bench ingest|planner [options]                 benchmarks

Bad input (unknown key, wrong type, missing file, corrupt data) ends with one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import DrivecastError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    from pipeline.stages import STAGE_NAMES

    parser = argparse.ArgumentParser(prog="drivecast", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run every stage in order")
    _stage_args(run)
    for name in STAGE_NAMES:
        _stage_args(sub.add_parser(name, help=f"run the {name} stage (and the stages it needs)"))
    _stage_args(sub.add_parser("iterate", help="the model-based loop: collect with the "
                               "planner, retrain, repeat (iterate.rounds rounds)"))
    _stage_args(sub.add_parser("replay", help="the decision rule on the critic's held-out "
                               "labelled decisions, for a grid of risk budgets and lambdas"))
    grid = sub.add_parser("gridworld", help="the slippery-gridworld counting example")
    grid.add_argument("config", nargs="?", default=None, help="YAML config (default: built-in)")
    grid.add_argument("overrides", nargs="*", help="dotted overrides, e.g. gridworld.rounds=4")
    grid.add_argument("--force", action="store_true", help="recompute even if complete")
    _bench_args(sub.add_parser("bench", help="benchmarks (figures as ratios to a baseline)"))
    return parser


def _stage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config, e.g. configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. ingest.episodes=4")
    parser.add_argument("--force", action="store_true",
                        help="recompute the stage(s) even if a complete directory exists")


def _bench_args(parser: argparse.ArgumentParser) -> None:
    from pipeline.bench import BENCHMARKS

    parser.add_argument("which", choices=sorted(BENCHMARKS), help="what to measure")
    parser.add_argument("config", nargs="?", default=None, help="YAML config (optional)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides")


def dispatch(args: argparse.Namespace) -> int:
    from pipeline import commands

    if args.command == "bench":
        return commands.bench(args.which, args.config, args.overrides)
    if args.command == "gridworld":
        return commands.gridworld(args.config, args.overrides, args.force)
    if args.command == "iterate":
        return commands.iterate(args.config, args.overrides, args.force)
    if args.command == "replay":
        return commands.replay(args.config, args.overrides, args.force)
    return commands.stages(args.command, args.config, args.overrides, args.force)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return dispatch(args)
    except DrivecastError as err:
        print(f"drivecast: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("drivecast: interrupted; finished work is kept and reused on the next run",
              file=sys.stderr)
        return EXIT_INTERRUPTED
