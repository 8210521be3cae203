"""``python -m sage_dialog`` is the ``sage-dialog`` command."""

import sys

from sage_dialog.cli import main

sys.exit(main())
