"""Training: the loop (trainer.py) and the tasks it trains (tasks/), label-smoothed loss, the section 5.3
learning rate, train_state.pt. The weights-file helpers are re-exported from transformer/model_dir.py."""

from transformer.model_dir import (
    apply_weights,
    atomic_path,
    atomic_write_text,
    average_weights,
    load_weights,
    save_weights,
    unwrap_model,
)
from transformer.training.checkpoint import load_train_state, save_train_state
from transformer.training.loss import label_smoothed_cross_entropy
from transformer.training.schedule import (
    cooldown_factor,
    inverse_sqrt_lr,
    learning_rate,
    make_optimizer,
    set_learning_rate,
)

__all__ = [
    "apply_weights",
    "atomic_path",
    "atomic_write_text",
    "average_weights",
    "cooldown_factor",
    "inverse_sqrt_lr",
    "label_smoothed_cross_entropy",
    "learning_rate",
    "load_train_state",
    "load_weights",
    "make_optimizer",
    "save_train_state",
    "save_weights",
    "set_learning_rate",
    "unwrap_model",
]
