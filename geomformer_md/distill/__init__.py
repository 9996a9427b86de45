"""Active-learning distillation of a GeoMFormer committee from any ASE-calculator teacher."""

from .config import DistillConfig, distill_config_from_dict, load_distill_config
from .run import DistillRun, distill

__all__ = ["DistillConfig", "DistillRun", "distill", "distill_config_from_dict",
           "load_distill_config"]
