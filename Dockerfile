# tokenfleet operator image. (Triton runtimes are separate: the chart's DaemonSets run NVIDIA's
# tritonserver image on each node.)
#
# Layers: the pinned dependencies (requirements.lock, hash-checked) in one layer, the operator's
# own wheel in a small layer on top, so a code change rebuilds and ships only the latter.
# Build: buildah bud (or podman/docker build) --build-arg REVISION=$(git rev-parse HEAD) -t tokenfleet .
# Without a registry (CI): `make image` (image/build.sh) builds the same layers from a debootstrap
# root with buildah and writes an OCI archive.
# requirements.lock: `uv pip compile pyproject.toml --generate-hashes --python-version 3.11
#   --python-platform x86_64-manylinux_2_28 -o requirements.lock` after a dependency change.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/tokenfleet \
 && /opt/tokenfleet/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock

FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/tokenfleet/tokenfleet
LABEL org.opencontainers.image.title="tokenfleet" \
      org.opencontainers.image.description="Kubernetes operator: factory immersion racks and parked EVs as one Triton inference fleet" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
RUN useradd --uid 1000 --no-create-home --shell /usr/sbin/nologin tokenfleet
# dependency layer (changes only with requirements.lock)
COPY --from=deps /opt/tokenfleet /opt/tokenfleet
# application layer
COPY --from=wheel /dist /tmp/dist
RUN /opt/tokenfleet/bin/pip install --no-cache-dir --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist
ENV PATH=/opt/tokenfleet/bin:$PATH PYTHONDONTWRITEBYTECODE=1
USER 1000
EXPOSE 8080 9090
ENTRYPOINT ["tokenfleet"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
