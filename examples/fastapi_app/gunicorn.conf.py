# FastAPI under gunicorn: uvicorn's worker class, the same boxkite hooks.
from boxkite_middleware.gunicorn import *  # noqa: F403

bind = "127.0.0.1:5002"
workers = 2
worker_class = "uvicorn_worker.UvicornWorker"
