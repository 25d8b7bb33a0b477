"""``python -m tools``'s help: the commands one line each, every argument described, ``verify``'s checks by name; and
``verify``'s output naming the checks that passed, the one that failed and those not run."""

from __future__ import annotations

import inspect

import fire
import pytest
from fire import docstrings

from tools.cli import COMMANDS
from tools.commands.verify import CHECKS
from tools.commands.verify import verify_command as verify


def _help(capsys, *command: str) -> str:
    with pytest.raises(fire.core.FireExit):
        fire.Fire(COMMANDS, command=[*command, "--help"], name="python -m tools")
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_top_level_help_lists_every_command_with_its_one_line_summary(capsys):
    text = _help(capsys)
    assert "__main__" not in text
    for name, command in COMMANDS.items():
        summary = docstrings.parse(command.__doc__).summary
        assert summary and "\n" not in summary
        assert f"{name}\n       {summary}" in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_argument_of_every_command_has_a_description_in_its_help(name, capsys):
    command = COMMANDS[name]
    described = {arg.name: arg.description for arg in docstrings.parse(command.__doc__).args or []}
    parameters = list(inspect.signature(command).parameters)
    assert [p for p in parameters if not described.get(p)] == []
    text = _help(capsys, name)
    for p in parameters:
        assert described[p].split()[0] in text.split(p.upper(), 1)[1]  # the description follows the argument
    assert "..." not in text.replace("e.g. .../", "")  # no truncated type


def test_verify_help_lists_every_check_by_name_in_order(capsys):
    text = _help(capsys, "verify")
    positions = [text.find(f"        {name}: ") for name, _ in CHECKS]
    assert -1 not in positions and positions == sorted(positions)


def test_verify_output_names_the_failed_check_and_those_not_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        verify(str(tmp_path))  # an empty folder: no required file
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    names = [name for name, _ in CHECKS]
    assert err.startswith("FAILED: required files: ")
    assert f"not run: {', '.join(names[1:])}" in err
