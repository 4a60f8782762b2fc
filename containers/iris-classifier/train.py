"""Train the iris classifier and save it with joblib.

Runs at image build time (so the image ships a ready model) and is imported by app.py to train in
memory when no model file exists. The data set ships inside scikit-learn: nothing is downloaded.

    python3 train.py --output model.joblib
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RANDOM_STATE = 0  # fixed so every build trains the same model


def train() -> dict[str, Any]:
    """A bundle: the fitted pipeline plus what the app needs to describe and check it."""
    iris = load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=RANDOM_STATE))
    model.fit(iris.data, iris.target)
    return {
        "model": model,
        "species": [str(name) for name in iris.target_names],
        "features": list(iris.feature_names),
        "train_accuracy": float(model.score(iris.data, iris.target)),
        "sklearn_version": sklearn.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="model.joblib", help="where to write the model bundle")
    args = parser.parse_args()
    bundle = train()
    joblib.dump(bundle, args.output)
    print(
        f"trained {type(bundle['model'][-1]).__name__} on iris: "
        f"train accuracy {bundle['train_accuracy']:.3f}, saved to {args.output}"
    )


if __name__ == "__main__":
    main()
