"""``puente``: the command line (``serve``, ``call``, ``demo``, ``nlu …``)."""
from gateway.cli.main import main

__all__ = ["main"]
