# syntax=docker/dockerfile:1.7@sha256:a57df69d0ea827fb7266491f2813635de6f17269be881f696fbfdf2d83dda33e
# exportpipe orchestrator image. Orchestrator: turns ExportRequested messages on SQS 1 into DownloadJobs on SQS 2.
# Build from the repository root:
#   docker build -f docker/orchestrator.Dockerfile -t exportpipe/orchestrator:$(git rev-parse HEAD) .
# Only exportpipe-orchestrator and exportpipe-common (plus their locked third-party
# dependencies) are installed: no other service, no tools, no dev dependencies.

# Every image is pinned by digest (a multi-arch index: amd64 and arm64); refresh with
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# (infra/cdk/README.md, "Pinned images and actions"). The tag stays for readers.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# uv from PyPI at the version the Makefile uses: a release's files cannot be replaced.
FROM ${PYTHON_IMAGE} AS uv
RUN pip install --no-cache-dir --root-user-action=ignore uv==0.13.9

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /usr/local/bin/uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Third-party dependencies from the lock alone, so this layer survives source edits.
# uv needs every workspace member's pyproject.toml to check the lock (--locked).
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=libs/common/pyproject.toml,target=libs/common/pyproject.toml \
    --mount=type=bind,source=libs/testing/pyproject.toml,target=libs/testing/pyproject.toml \
    --mount=type=bind,source=services/orchestrator/pyproject.toml,target=services/orchestrator/pyproject.toml \
    --mount=type=bind,source=services/worker/pyproject.toml,target=services/worker/pyproject.toml \
    --mount=type=bind,source=infra/cdk/pyproject.toml,target=infra/cdk/pyproject.toml \
    --mount=type=bind,source=tools/pyproject.toml,target=tools/pyproject.toml \
    uv sync --locked --no-install-workspace --no-dev --package exportpipe-orchestrator

# Then the service and the shared library themselves, as regular (non-editable) installs.
COPY libs/common libs/common
COPY services/orchestrator services/orchestrator
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=libs/testing/pyproject.toml,target=libs/testing/pyproject.toml \
    --mount=type=bind,source=services/worker/pyproject.toml,target=services/worker/pyproject.toml \
    --mount=type=bind,source=infra/cdk/pyproject.toml,target=infra/cdk/pyproject.toml \
    --mount=type=bind,source=tools/pyproject.toml,target=tools/pyproject.toml \
    uv sync --locked --no-dev --no-editable --package exportpipe-orchestrator

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 exportpipe \
    && useradd --system --uid 10001 --gid exportpipe --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin exportpipe \
    && chown 10001:10001 /tmp && chmod 0700 /tmp
# Only the virtual environment: no sources, no uv, no build cache.
COPY --from=builder /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EXPORTPIPE_HEARTBEAT_FILE=/tmp/exportpipe-orchestrator.heartbeat
WORKDIR /app
# The task's scratch volume is mounted on /tmp (read-only root filesystem). Declared here,
# Fargate creates the mount with this directory's owner and mode; undeclared, it is
# root-owned 0755 and the service user cannot write its spools or heartbeat file
# (aws/containers-roadmap#938).
VOLUME ["/tmp"]
USER 10001:10001
# Graceful shutdown: stop receiving, finish or release in-flight messages, flush.
# ECS (and Fargate Spot's two-minute warning) sends SIGTERM, then SIGKILL after stopTimeout.
STOPSIGNAL SIGTERM
# Healthy while the consumer loop keeps touching its heartbeat file (see infra/cdk/README.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, time; p = os.environ['EXPORTPIPE_HEARTBEAT_FILE']; sys.exit(0 if os.path.exists(p) and time.time() - os.path.getmtime(p) < 180 else 1)"]
CMD ["exportpipe-orchestrator"]
