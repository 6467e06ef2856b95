"""``python -m enos_lab``: same as the ``enos-lab`` command."""

import sys

from .cli import main

sys.exit(main())
