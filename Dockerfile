# syntax=docker/dockerfile:1
#
# specrec image: one image, two processes (compose runs `specrec-serve` as api and
# `specrec-worker` as trainer). Targets:
#   runtime (default, last stage)  CPU torch wheel + faiss-cpu
#   gpu                            CUDA torch + faiss-gpu (needs the NVIDIA container toolkit to
#                                  see a GPU; see docker-compose.gpu.yml)
#   docker build -t specrec .                      docker build --target gpu -t specrec:gpu .
#
# No secret is baked in: ADMIN_TOKEN comes from the environment at run time.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a venv in /opt/venv, the project built as a wheel ------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY store ./store
COPY trainer ./trainer
COPY worker ./worker
COPY service ./service
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- CPU venv: torch from the CPU index first (about 200 MB instead of several GB) -----------
FROM builder AS venv-cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# with the postgres extra: the same image runs on SQLite or on PostgreSQL (SPECREC_DATABASE_URL)
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && whl="$(ls /wheels/specrec-*.whl)" \
 && pip install "specrec[cpu,postgres] @ file://${whl}"

# ---- GPU venv: CUDA torch (PyPI's Linux wheels are CUDA builds), faiss-gpu (the gpu extra) ----
# faiss-cpu and faiss-gpu ship the same `faiss` package: the gpu extra brings faiss-gpu alone.
FROM builder AS venv-gpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_GPU_INDEX_URL=https://pypi.org/simple
RUN pip install --index-url "${TORCH_GPU_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && whl="$(ls /wheels/specrec-*.whl)" \
 && pip install "specrec[gpu,postgres] @ file://${whl}"

# ---- runtime base: slim Python, non-root user, data volume, health check ---------------------
FROM ${PYTHON_IMAGE} AS runtime-base
RUN groupadd --system --gid 10001 specrec \
 && useradd --system --uid 10001 --gid specrec --create-home --home-dir /home/specrec specrec \
 && mkdir -p /data \
 && chown specrec:specrec /data
COPY scripts/healthcheck.py /usr/local/bin/specrec-healthcheck
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SPECREC_HOME=/data \
    HOST=0.0.0.0 \
    PORT=8000
WORKDIR /home/specrec
VOLUME ["/data"]
EXPOSE 8000
# The API's readiness (503 until a model is loaded and indexed). The trainer service overrides
# this in docker-compose.yml with `specrec-healthcheck model`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/specrec-healthcheck", "ready"]
CMD ["specrec-serve"]

FROM runtime-base AS gpu
COPY --from=venv-gpu /opt/venv /opt/venv
USER specrec

# Default target: last stage.
FROM runtime-base AS runtime
COPY --from=venv-cpu /opt/venv /opt/venv
USER specrec
