"""``python -m detecture`` is the same as the ``detecture`` command."""

import sys

from .cli import main

sys.exit(main())
