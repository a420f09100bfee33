"""`python -m capsacc` runs the `nascaps` command."""

import sys

from capsacc.cli import main

sys.exit(main())
