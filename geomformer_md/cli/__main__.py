"""``python -m geomformer_md.cli`` (and ``torchrun -m geomformer_md.cli``)."""

import sys

from . import main

sys.exit(main())
