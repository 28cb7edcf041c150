"""A misspelt option is named (with the nearest real one) before argparse reports a missing
required option, at whichever level of subcommands it was written."""

from __future__ import annotations

import pytest

from attnguide.cli.main import main


def usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_misspelt_required_option_is_named_not_reported_missing(capsys):
    err = usage_error(capsys, ["generate", "--promt", "a cat", "--out", "x"])
    assert err == "attnguide generate: error: unrecognized argument --promt (did you mean --prompt?)"


@pytest.mark.parametrize("argv,expected", [
    (["generate", "--prompt=a cat", "--out", "x", "--sed=3"], "attnguide generate: error: unrecognized argument --sed (did you mean --seed?)"),
    (["toyworld", "evaluate", "--sampels", "3"], "attnguide toyworld evaluate: error: unrecognized argument --sampels (did you mean --samples?)"),
    (["--debg", "plugins"], "attnguide: error: unrecognized argument --debg (did you mean --debug?)"),
    (["generate", "--prompt", "a", "--out", "x", "--zzzz"], "attnguide generate: error: unrecognized argument --zzzz"),
    (["generate", "--promt", "a", "--ot", "x"], "attnguide generate: error: unrecognized arguments --promt (did you mean --prompt?), --ot (did you mean --out?)"),
    (["parse", "a cat", "surplus"], "attnguide parse: error: unrecognized argument 'surplus'"),
])
def test_unknown_arguments_are_named_by_the_subcommand_that_read_them(capsys, argv, expected):
    assert usage_error(capsys, argv) == expected


def test_missing_required_options_are_still_reported(capsys):
    assert usage_error(capsys, ["generate", "--out", "x"]).endswith("the following arguments are required: --prompt")


def test_required_flags_are_restored_after_the_check():
    from attnguide.cli.main import build_parser
    from attnguide.cli.unknown_options import reject_unknown_options

    parser = build_parser()
    reject_unknown_options(parser, ["generate", "--prompt", "a", "--out", "x"])
    generate = parser._subparsers._group_actions[0].choices["generate"]  # type: ignore[union-attr]
    assert {a.dest for a in generate._actions if a.required} == {"prompt", "out"}
