"""`python -m clipmerge`: the same as the `clipmerge` command (torchrun starts ranks this way)."""

import sys

from clipmerge.cli import main

sys.exit(main())
