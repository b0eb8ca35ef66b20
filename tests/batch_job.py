"""Run as a script: a nightly scoring job recording drifted data and pushing it.

python -m tests.batch_job BASELINE GATEWAY
"""

from __future__ import annotations

import sys

from boxkite_middleware import BatchRecorder

from .test_prometheus import _drifted


def main() -> None:
    baseline, gateway = sys.argv[1:3]
    features, labels = _drifted(600)
    with BatchRecorder(baseline, model="batch", gateway=gateway, job="nightly", settle=3) as batch:
        for start in (0, 300):  # a job scoring its table in two parts
            part = {name: values[start : start + 300] for name, values in features.items()}
            batch.record(part, labels[start : start + 300])


if __name__ == "__main__":
    main()
