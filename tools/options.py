"""Values of config options as the command line delivers them: ``--overwrite true`` reaches a config as the string
``"true"``. Used by the runtime (:mod:`tools.runner`, :mod:`tools.masks`, the pipelines); it imports nothing of the
project, so that everything can import it."""

from __future__ import annotations

from typing import Any

__all__ = ["as_flag"]

_TRUE, _FALSE = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off", "none", "")


def as_flag(value: Any, name: str) -> bool:
    """A yes/no option from a config or the command line (``--overwrite true`` reaches the config as the string
    ``"true"``, which Python would read as true whatever it says).

    Raises:
        ValueError: for anything but a boolean, 0/1, None or one of the words true/false, yes/no, on/off.
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"--{name} must be true or false, got {value!r}.")
