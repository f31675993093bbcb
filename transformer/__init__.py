"""The Transformer of "Attention Is All You Need" and its descendants, on PyTorch.

`transformer.load(DIR)` loads any model directory (transformer/api.py); `transformer` on the command line
trains and uses them (transformer/cli.py).
"""

from typing import Any

__all__ = ["load"]


def __getattr__(name: str) -> Any:
    if name == "load":  # imported on first use: `import transformer` (and the CLI's start) stays light
        from transformer.api import load

        return load
    raise AttributeError(f"module 'transformer' has no attribute {name!r}")
