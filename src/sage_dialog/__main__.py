"""``python -m sage_dialog`` is the ``sage-dialog`` command."""

import sys

from .cli import main

sys.exit(main())
