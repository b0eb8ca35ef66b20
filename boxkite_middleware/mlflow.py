"""MLflow: a baseline that travels with its model, and MLflow's scoring app served with it.

A baseline logged with `log_baseline` sits inside the logged model's artifacts, at
`BASELINE_ARTIFACT`, so every URI that names the model — ``models:/wine/1``,
``models:/wine@champion``, ``models:/m-…`` — carries the training distribution it was
trained on, and `load_baseline` finds it there. ``boxkite-middleware serve MODEL_URI`` runs
`serving_app` under gunicorn: MLflow's own scoring app (``/invocations``, ``/ping``,
``/version`` and every MLflow request format, exactly as ``mlflow models serve``) wrapped
in the middleware.

Imported only when used: ``mlflow-skinny`` is enough.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from .baseline import Baseline, BaselineError

BASELINE_ARTIFACT = "boxkite/histogram.prom"
"""Where the baseline is, relative to the model's (or the run's) artifact root."""

MODEL_PATH = "BOXKITE_MLFLOW_MODEL_PATH"
MODEL_LABEL = "BOXKITE_MLFLOW_MODEL"
MODEL_VERSION = "BOXKITE_MLFLOW_MODEL_VERSION"
"""How ``serve`` tells `serving_app` (in each gunicorn worker) what to serve."""

logger = logging.getLogger("boxkite_middleware")


def log_baseline(baseline: Baseline, model: Any = None) -> str:
    """Log ``baseline`` with a logged model — its ``ModelInfo`` (what ``log_model`` returns)
    or its model id — so that the model's URIs carry it; without ``model``, as an artifact
    of the active run. Returns the baseline's URI."""
    import mlflow

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / Path(BASELINE_ARTIFACT).name
        baseline.save(path)
        folder = str(Path(BASELINE_ARTIFACT).parent)
        if model is None:
            mlflow.log_artifact(str(path), artifact_path=folder)
            run = mlflow.active_run()
            assert run is not None  # log_artifact started one if there was none
            return f"runs:/{run.info.run_id}/{BASELINE_ARTIFACT}"
        model_id = model if isinstance(model, str) else model.model_id
        mlflow.MlflowClient().log_model_artifact(model_id, str(path), folder)
        return f"models:/{model_id}/{BASELINE_ARTIFACT}"


def load_baseline(uri: str) -> Baseline:
    """The baseline logged with a model (``models:/wine/1``, ``models:/wine@champion``,
    ``models:/m-…``) or a run (``runs:/<run id>``), or in a downloaded model directory.
    A `BaselineError` says which URI has none."""
    local = Path(uri)
    if local.is_dir():
        return Baseline.load(local / BASELINE_ARTIFACT)
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{uri.rstrip('/')}/{BASELINE_ARTIFACT}"
        )
    except (MlflowException, OSError) as error:
        raise BaselineError(f"{uri}: no baseline logged with it ({error})") from error
    return Baseline.load(path)


def registered(uri: str) -> tuple[str, str | None]:
    """The registered name and version a ``models:/`` URI names (an alias resolved), for the
    ``model`` and ``model_version`` labels; for other URIs ``("mlflow", None)``."""
    if not uri.startswith("models:/"):
        return "mlflow", None
    name, _, rest = uri.removeprefix("models:/").partition("/")
    if "@" in name:
        import mlflow

        name, alias = name.split("@", 1)
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        return name, str(version)
    if name.startswith("m-") and not rest:  # a logged model, not a registered one
        return "mlflow", None
    return name, rest.split("/", 1)[0] or None


def serving_app() -> Any:
    """MLflow's scoring app for the model ``serve`` downloaded, wrapped in the middleware
    (gunicorn calls this in each worker). A model without a baseline is served with a
    warning, its requests' outcomes counted but no values."""
    from mlflow.pyfunc import scoring_server

    from .middleware import BoxkiteMiddleware

    path = os.environ[MODEL_PATH]
    app = scoring_server.init(scoring_server.load_model_with_mlflow_config(path))
    baseline_file = Path(path) / BASELINE_ARTIFACT
    if baseline_file.exists():
        baseline: Baseline | None = Baseline.load(baseline_file)
    else:
        baseline = None
        logger.warning(
            "boxkite-middleware: the model at %s has no baseline (log one with "
            "boxkite_middleware.mlflow.log_baseline): counting request outcomes only",
            path,
        )
    version = os.environ.get(MODEL_VERSION)
    app.add_middleware(
        BoxkiteMiddleware,
        baseline=baseline,
        model=os.environ.get(MODEL_LABEL, "mlflow"),
        labels={"model_version": version} if version else None,
    )
    return app
