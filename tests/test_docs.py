"""The docs tell the truth about the CLI: every `drivecast ...` command shown in README.md
and docs/ parses, names config files that exist and overrides that load."""

import re
import shlex
from pathlib import Path

import pytest

from pipeline.cli import build_parser, place_overrides
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = "configs/debug.yaml"
# a synopsis' words made concrete (None: dropped)
SYNOPSIS = {"CONFIG": PLACEHOLDER, "COMMAND": "run", "key.sub=value": None, "...": None,
            "\\": None}
INLINE = re.compile(r"`(drivecast [^`]+)`")
FENCE = re.compile(r"^```.*?$(.*?)^```", re.M | re.S)


def shown_commands(text: str) -> list[str]:
    """Commands in inline code and at the start of code-block lines (after an optional $)."""
    found = INLINE.findall(text)
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith(("drivecast ", ".venv/bin/drivecast ")):
                found.append(line.removeprefix(".venv/bin/"))
    return found


def argv_of(command: str) -> list[str]:
    """The arguments of a shown command: its comment dropped, a synopsis made concrete
    (CONFIG -> a real config, `a|b` -> a, optional [..] parts and `...` dropped)."""
    command = re.sub(r"\s+(#|>).*$", "", command)  # a comment or a redirection
    command = re.sub(r"(?<=\s)\[[^\]]*\]", "", command)  # an optional synopsis part
    argv = []
    for token in shlex.split(command)[1:]:
        token = token.split("|")[0] if "|" in token and "=" not in token else token
        if SYNOPSIS.get(token, token) is not None:
            argv.append(SYNOPSIS.get(token, token))
    return argv


def all_shown() -> list[tuple[str, str]]:
    return [(page.name, cmd) for page in PAGES for cmd in shown_commands(page.read_text())]


def test_the_docs_show_commands_of_every_main_verb():
    verbs = {argv_of(cmd)[0] for _, cmd in all_shown() if argv_of(cmd)}
    assert {"run", "ingest", "train", "simulate", "iterate", "config", "report", "bench"} <= verbs


def test_argv_of_makes_a_synopsis_concrete():
    assert argv_of("drivecast ingest|train CONFIG [overrides] --force  # one stage") == \
        ["ingest", PLACEHOLDER, "--force"]
    assert argv_of('drivecast run CONFIG "simulate.baselines=[rule]" > out.txt') == \
        ["run", PLACEHOLDER, "simulate.baselines=[rule]"]


@pytest.mark.parametrize("page,command", all_shown())
def test_shown_command_parses_and_its_config_loads(page, command):
    argv = argv_of(command)
    if len(argv) == 1:  # prose naming a verb, e.g. "`drivecast simulate` imports no torch"
        verbs = build_parser()._subparsers._group_actions[0].choices
        assert argv[0] in verbs, f"{page}: `{command}` names no drivecast verb"
        return
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{page}: `{command}` does not parse (exit {exit_.code})")
    place_overrides(args)
    configs = [getattr(args, "config", None)]
    overrides = list(getattr(args, "overrides", None) or [])
    if args.command == "report":
        configs = [a for a in args.args if "=" not in a]
        overrides = [a for a in args.args if "=" in a]
    for config in configs:
        if config is not None:
            assert (ROOT / config).is_file(), f"{page}: `{command}` names a missing config"
        load_config(ROOT / config if config else None, overrides)
