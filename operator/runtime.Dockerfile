# syntax=docker/dockerfile:1
# The model runtime image: what runs in a ModelDeployment's pods (fetch init container and model server).
#   docker build -f operator/runtime.Dockerfile -t ghcr.io/modelpilot/runtime:<version> .
# Installs the `runtime` extra of pyproject.toml (MLflow's skinny client, scikit-learn, pandas, numpy,
# Prometheus client): the same definition the test suite installs, so what the tests serve is what ships.
# Other model flavours: the requirements policy Install adds their libraries in the pod, or build FROM this
# image and `pip install` them. The libraries' own test suites are left out (over 100 MiB no model uses).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/modelpilot
WORKDIR /src
# Dependencies first, from pyproject.toml alone (an empty package stands in for the source), so that
# editing the source reuses this layer instead of reinstalling every dependency.
COPY pyproject.toml README.md ./
RUN mkdir -p operator/modelpilot \
    && touch operator/modelpilot/__init__.py \
    && /opt/modelpilot/bin/pip install --no-cache-dir ".[runtime]" \
    && /opt/modelpilot/bin/pip uninstall --yes modelpilot \
    && rm -rf operator build \
    && find /opt/modelpilot/lib/python3*/site-packages/numpy /opt/modelpilot/lib/python3*/site-packages/pandas \
        /opt/modelpilot/lib/python3*/site-packages/scipy /opt/modelpilot/lib/python3*/site-packages/sklearn \
        -depth -type d -name tests -exec rm -rf {} +
COPY operator/modelpilot operator/modelpilot
RUN /opt/modelpilot/bin/pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/modelpilot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/modelpilot \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
# OpenMP, which LightGBM's and XGBoost's native libraries load; base images without it get it here.
# hadolint ignore=DL3008
RUN if ! python -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('gomp') is None)"; then \
        apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*; \
    fi
RUN groupadd --system --gid 10001 modelpilot \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/modelpilot modelpilot \
    && mkdir -p /var/lib/modelpilot/model \
    && chown -R 10001:10001 /var/lib/modelpilot
COPY --from=build /opt/modelpilot /opt/modelpilot
USER 10001:10001
WORKDIR /home/modelpilot
EXPOSE 8080
CMD ["python", "-m", "modelpilot.serving.server", "--model-dir", "/var/lib/modelpilot/model", "--port", "8080", "--host", "0.0.0.0"]
