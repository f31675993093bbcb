"""`transformer experiment NAME`: the notes' claims about what came before the Transformer, measured (issue #14).

Each experiment is an `Experiment` (base.py) in its own module; EXPERIMENTS lists them in the order of
docs/EXPERIMENTS.md, which report.py writes from their result.json files.
"""

from __future__ import annotations

from transformer.experiments.activations import Activations
from transformer.experiments.base import Experiment, run_experiment
from transformer.experiments.long_range import LongRange
from transformer.experiments.order import Order
from transformer.experiments.parallel import Parallel
from transformer.experiments.positions import Positions
from transformer.experiments.translation import Bottleneck, Translation
from transformer.experiments.vanishing import VanishingGradients

EXPERIMENTS: dict[str, type[Experiment]] = {
    e.name: e for e in (Order, LongRange, VanishingGradients, Bottleneck, Parallel, Translation, Positions,
                        Activations)
}

__all__ = ["EXPERIMENTS", "Experiment", "run_experiment"]
