"""`python -m gpuyard`: the `gpuyard` command."""

import sys

from gpuyard.cli import main

sys.exit(main())
