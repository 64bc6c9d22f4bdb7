"""``python -m rlenv`` is the ``rlenv`` command."""

import sys

from .cli import main

sys.exit(main())
