"""``python -m boxkite_middleware``: the ``boxkite-middleware`` command."""

import sys

from .cli import main

sys.exit(main())
