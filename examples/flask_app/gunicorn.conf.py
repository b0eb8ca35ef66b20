# The hooks of boxkite_middleware.gunicorn set PROMETHEUS_MULTIPROC_DIR before the app loads.
from boxkite_middleware.gunicorn import *  # noqa: F403

bind = "127.0.0.1:5001"
workers = 4
