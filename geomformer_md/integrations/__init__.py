"""Adapters to other simulation frameworks (optional extras, imported on demand).

- :mod:`geomformer_md.integrations.torchsim`: GeoMFormer as a TorchSim
  ``ModelInterface`` (``pip install torch-sim-atomistic``).
"""
