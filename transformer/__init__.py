"""The Transformer of "Attention Is All You Need" and its descendants, on PyTorch.

`transformer.load(DIR)` loads any model directory (transformer/api.py); `transformer` on the command line
trains and uses them (transformer/cli.py).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["__version__", "load"]

try:
    __version__ = version("transformer")  # pyproject.toml's, as installed
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "load":  # imported on first use: `import transformer` (and the CLI's start) stays light
        from transformer.api import load

        return load
    raise AttributeError(f"module 'transformer' has no attribute {name!r}")
