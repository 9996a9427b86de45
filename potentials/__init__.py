"""Shipped potentials (model files + manifest.json); see geomformer_md.io.registry."""
