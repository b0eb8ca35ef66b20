"""The trap of a multiprocess directory made in the app module: under uWSGI ``--lazy-apps``
every worker imports it, so every worker makes a directory of its own."""

import os
import tempfile

os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="boxkite-own-")

from .e2e_app import wsgi  # noqa: F401  (after the directory is set)
