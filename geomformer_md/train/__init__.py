"""Training: config, data, loop. Imports the model; the model never imports this."""

from .config import (
    DataConfig,
    TrainConfig,
    TrainingConfig,
    load_train_config,
    train_config_from_dict,
)
from .trainer import Trainer, export_checkpoint, train

__all__ = [
    "DataConfig",
    "TrainConfig",
    "Trainer",
    "export_checkpoint",
    "TrainingConfig",
    "load_train_config",
    "train",
    "train_config_from_dict",
]
