"""`python -m ocrc.compiler.cli` is `ocrc`."""

import sys

from ocrc.compiler.cli import main

sys.exit(main())
