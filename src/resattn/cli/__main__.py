"""``python -m resattn.cli``: the ``resattn`` command line."""
import sys

from resattn.cli import main

if __name__ == "__main__":
    sys.exit(main())
