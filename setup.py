"""mic-tf: MIC (CIKM'22) in TensorFlow 2 / Keras 3.

CPU (default):  pip install -e ".[test]"      (".[serving]" for the online service alone)
GPU:            pip install -r requirements-gpu.txt && pip install --no-deps -e .
"""

from pathlib import Path

from setuptools import find_packages, setup


def _requirements(name):
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


# `python -m mic_tf.serving` (spec 9); Redis itself is Debian's `redis-server` (.ci/run).
SERVING = ["fastapi>=0.115", "pydantic>=2.7", "uvicorn[standard]>=0.30", "redis[hiredis]>=5.0",
           "prometheus-client>=0.20", "orjson>=3.9"]

setup(
    name="mic-tf",
    version="0.1.0",
    description="Model-agnostic Integrated Cross-channel recommender (MIC, CIKM'22) in TF2/Keras 3",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mic_tf", "mic_tf.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=_requirements("requirements.txt"),
    extras_require={"serving": SERVING,
                    "test": ["pytest>=7", "pytest-xdist>=3", "httpx>=0.27", "schemathesis>=4",
                             *SERVING]},
    license="Apache-2.0",
)
