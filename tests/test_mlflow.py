"""MLflow's own scoring server and client, with the middleware added in one line.

The request bytes are exactly what MLflow's ``ScoringServerClient`` sends for a DataFrame: a
``dataframe_split`` document in which missing values are the bare token ``NaN`` (which orjson
refuses until `payload.loads` swaps it for ``null``). The app is MLflow's scoring
server (FastAPI) for a pyfunc model, under uvicorn on loopback.
"""

from __future__ import annotations

import uuid
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc import scoring_server
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.utils.proto_json_utils import dump_input_data

from boxkite_middleware import Baseline, BoxkiteMiddleware

from .helpers import Scrape, assert_replay_equals_baseline, mixed_data
from .servers import asgi_server, settled_metrics


class Labels(mlflow.pyfunc.PythonModel):
    """Stands in for a classifier: "dog" where x > -3, else "cat"."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[str]:
        return np.where(model_input["x"] > -3, "dog", "cat").tolist()


@pytest.fixture(scope="module")
def pyfunc_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlflow") / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice on packaging, not about this test
        mlflow.pyfunc.save_model(str(path), python_model=Labels(), pip_requirements=[])
    return mlflow.pyfunc.load_model(str(path))


def test_mlflow_client_through_mlflow_server_replays_the_baseline_exactly(pyfunc_model):
    features, _ = mixed_data()
    frame = pd.DataFrame(features)
    assert b"NaN" in dump_input_data(frame).encode()  # the bytes below carry the bare token
    baseline = Baseline.from_data(features, inference=pyfunc_model.predict(frame))
    model = "mlflow-" + uuid.uuid4().hex[:8]
    app = scoring_server.init(pyfunc_model)
    app.add_middleware(BoxkiteMiddleware, baseline=baseline, model=model)
    singles = 20  # one-row requests take the recorder's other path
    with asgi_server(app) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        client = ScoringServerClient(host, port)
        starts = [*range(singles), *range(singles, len(frame), 116)]
        for start, end in zip(starts, [*starts[1:], len(frame)]):
            answer = client.invoke(frame.iloc[start:end])
            assert len(answer["predictions"]) == end - start
        _, _, body = settled_metrics(url, model, len(starts))
    result = Scrape(body.decode())
    recorded = result.value("boxkite_requests_total", model=model, outcome="recorded", reason="ok")
    assert recorded == len(starts)
    assert_replay_equals_baseline(result, model, features)
    assert result.value("boxkite_feature_missing_total", model=model, feature="colour") == 36
