"""`python -m cli ...`: the `ulip2` command (torchrun and Blender's operators start it so)."""

import sys

from cli.main import main

sys.exit(main())
