"""iris-classifier: a scikit-learn model that names the iris species from four measurements.

data: {"measurements": [[sepal_length, sepal_width, petal_length, petal_width], ...]} (cm),
      or one row [5.1, 3.5, 1.4, 0.2], or {"measurements": [5.1, 3.5, 1.4, 0.2]}.
JSON reply: {"predictions": [{"species": "setosa", "probabilities": {...}}, ...]}, one per row.
The model is loaded from MODEL_PATH (default: model.joblib beside this file) at start; when the
file is missing it is trained in memory first, which takes about a second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import joblib

try:
    import infernet_service as svc
except ImportError:  # run from the source tree: the shared module lives in containers/common/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
    import infernet_service as svc

import train

MAX_ROWS = 1000
FEATURES = 4
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "model.joblib"
SHAPE_HINT = '{"measurements": [[sepal_length, sepal_width, petal_length, petal_width], ...]}'

log = logging.getLogger("iris")


def load_bundle(path: Path) -> dict[str, Any]:
    if path.is_file():
        bundle: dict[str, Any] = joblib.load(path)
        log.info("loaded model from %s (train accuracy %.3f)", path, bundle["train_accuracy"])
        return bundle
    log.info("no model file at %s; training one in memory", path)
    return train.train()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_measurements(data: Any) -> list[list[float]]:
    """Rows of 4 finite, non-negative numbers, or BadInput naming the first thing that is wrong."""
    rows = data
    if isinstance(data, dict):
        if "measurements" not in data:
            raise svc.BadInput(f"data must be {SHAPE_HINT} or one list of 4 numbers; 'measurements' is missing")
        rows = data["measurements"]
    if not isinstance(rows, list) or not rows:
        raise svc.BadInput(f"measurements must be a non-empty list; expected {SHAPE_HINT}")
    if not isinstance(rows[0], list):  # a single row given flat: [5.1, 3.5, 1.4, 0.2]
        rows = [rows]
    if len(rows) > MAX_ROWS:
        raise svc.BadInput(f"too many rows: {len(rows)} (at most {MAX_ROWS} per request)")
    parsed: list[list[float]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != FEATURES:
            raise svc.BadInput(
                f"measurements[{i}] must be a list of {FEATURES} numbers "
                f"(sepal length, sepal width, petal length, petal width), got {row!r}"
            )
        for j, value in enumerate(row):
            if not _is_number(value) or not math.isfinite(value):
                raise svc.BadInput(f"measurements[{i}][{j}] must be a finite number, got {value!r}")
            if value < 0:
                raise svc.BadInput(f"measurements[{i}][{j}] must not be negative, got {value!r}")
        parsed.append([float(v) for v in row])
    return parsed


def predict(bundle: dict[str, Any], rows: list[list[float]]) -> dict[str, Any]:
    species: list[str] = bundle["species"]
    probabilities = bundle["model"].predict_proba(rows)
    predictions = []
    for row_probs in probabilities:
        best = max(range(len(species)), key=lambda k: row_probs[k])
        predictions.append(
            {
                "species": species[best],
                "probabilities": {name: round(float(p), 6) for name, p in zip(species, row_probs, strict=True)},
            }
        )
    return {"predictions": predictions}


def make_service(bundle: dict[str, Any]) -> svc.Service:
    async def classify(job: svc.Job) -> dict[str, Any]:
        rows = parse_measurements(job.data)
        # scikit-learn is CPU work: keep it off the event loop so health checks stay responsive.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, predict, bundle, rows)

    return svc.Service(
        name="iris-classifier",
        compute=classify,
        default_models=("iris-classifier", "iris"),
        description="scikit-learn logistic regression trained on the iris data set",
    )


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    svc.run(make_service(load_bundle(Path(os.environ.get("MODEL_PATH", DEFAULT_MODEL_PATH)))))
