"""``python -m service`` is ``mollify serve``: the same flags, the same environment variables."""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
