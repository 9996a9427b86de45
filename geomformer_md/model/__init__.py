"""The GeoMFormer model: config, layers and the energy/vector model. Never imports ASE at
import time."""

from .config import GeoMFormerConfig
from .geomformer import GeoMFormer, init_summary

__all__ = ["GeoMFormer", "GeoMFormerConfig", "init_summary"]
