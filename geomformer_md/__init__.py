"""GeoMFormer machine-learning force field."""
