# syntax=docker/dockerfile:1
# The model runtime image: what runs in a ModelDeployment's pods (fetch init container and model server).
#   docker build -f operator/runtime.Dockerfile -t ghcr.io/modelpilot/runtime:<version> .
# Installs the `runtime` extra of pyproject.toml (MLflow's skinny client, scikit-learn, pandas, numpy,
# Prometheus client): the same definition the test suite installs, so what the tests serve is what ships.
# Other model flavours: build FROM this image and `pip install` their libraries.

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
    && rm -rf operator build
COPY operator/modelpilot operator/modelpilot
RUN /opt/modelpilot/bin/pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/modelpilot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/modelpilot \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
RUN groupadd --system --gid 10001 modelpilot \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/modelpilot modelpilot \
    && mkdir -p /var/lib/modelpilot/model \
    && chown -R 10001:10001 /var/lib/modelpilot
COPY --from=build /opt/modelpilot /opt/modelpilot
USER 10001:10001
WORKDIR /home/modelpilot
EXPOSE 8080
CMD ["python", "-m", "modelpilot.serving.server", "--model-dir", "/var/lib/modelpilot/model", "--port", "8080", "--host", "0.0.0.0"]
