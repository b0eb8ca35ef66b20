"""The wine-grade classifier served by FastAPI, watched by boxkite-middleware (one line).

gunicorn -c examples/fastapi_app/gunicorn.conf.py --chdir examples/fastapi_app app:app
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from boxkite_middleware import BoxkiteMiddleware

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train import table  # noqa: E402

trained = pickle.loads((HERE / "model.pkl").read_bytes())

app = FastAPI()


class Split(BaseModel):
    """pandas ``orient="split"`` (MLflow's format)."""

    columns: list[str]
    data: list[list[float | str | None]]


@app.post("/invocations")
def invocations(request: Split) -> dict:
    columns = {name: [row[i] for row in request.data] for i, name in enumerate(request.columns)}
    return {"predictions": trained["model"].predict(table(columns)).tolist()}


app.add_middleware(BoxkiteMiddleware, baseline=HERE / "histogram.prom", model="wine-grade")
