"""The commands people run: ``python -m tools VERB ...``, one module a verb (``tools/commands/<verb>.py``, its
function ``<verb>_command`` and the code behind it). :mod:`tools.cli` wires them into the command line.

Nothing here is imported by a bundle's configs at run time, so ``tools pack`` never copies these modules into a
packed bundle: they are developer and release tools (verify, export, pack, benchmark, compare, crossval, promote, ...).
"""
