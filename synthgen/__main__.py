"""`python -m synthgen` is the `synthgen` command."""

from synthgen.cli import app

app(prog_name="synthgen")
