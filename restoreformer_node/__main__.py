"""`python -m restoreformer_node <command>`: see restoreformer_node/cli.py."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
