"""`python -m gpuyard.apiserver`: same as `gpuyard apiserver`."""

import sys

from gpuyard.cli import main

# Through the `gpuyard` command, so that its file modes and error reporting apply.
sys.exit(main(["apiserver", *sys.argv[1:]]))
