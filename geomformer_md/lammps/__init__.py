"""LAMMPS integration: ``pair_style geomformer`` (a plugin) and the model export it loads.

``build.build_plugin`` compiles the plugin against the installed LAMMPS and torch,
``export.export`` writes a model for it; ``geomformer-md lammps build-plugin|export``
are their command lines. See docs/lammps.md.
"""
