"""``python -m mlengine`` runs the command line."""

from mlengine.cli import app

app()
