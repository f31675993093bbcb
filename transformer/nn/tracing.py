"""Whether a tracer is recording the model: torch.compile, torch.export (the ONNX exporter) or torch.jit.

Code that reads a tensor's value in Python (a check, a shortcut) skips it while tracing, since the graph
being recorded cannot branch on data.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """Inside torch.compile, torch.export or torch.jit tracing."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    exporting = bool(is_exporting and is_exporting())
    return exporting or torch.compiler.is_compiling() or torch.jit.is_tracing()
