"""``python -m service.cli`` is the ``mollify`` command (for checkouts where it is not installed)."""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main())
