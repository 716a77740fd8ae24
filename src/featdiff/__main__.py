"""``python -m featdiff``: the ``featdiff`` command (see featdiff.cli)."""

import sys

from featdiff.cli import main

if __name__ == "__main__":
    sys.exit(main())
