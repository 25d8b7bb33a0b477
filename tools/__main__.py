import fire

from tools.cli import COMMANDS

if __name__ == "__main__":
    fire.Fire(COMMANDS)
