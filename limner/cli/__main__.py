"""``python -m limner.cli``: the same command as the ``limner`` console script."""

from limner.cli import app

app(prog_name="limner")
