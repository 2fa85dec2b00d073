"""``python -m qac``: the same as the ``qac`` command."""

import sys

from .main import main

sys.exit(main())
