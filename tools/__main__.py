"""``python -m tools COMMAND ...``: see :mod:`tools.cli`."""

import fire

from tools.cli import COMMANDS

if __name__ == "__main__":
    fire.Fire(COMMANDS, name="python -m tools")
