"""`python -m gpuyard.apiserver`: same as `gpuyard apiserver`."""

import sys

from gpuyard.apiserver.cli import main

sys.exit(main())
