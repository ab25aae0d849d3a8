# tokenfleet operator image. Multi-stage: build a wheel, install it into a slim runtime as a non-root user.
# (Triton runtimes are separate: the chart's DaemonSet runs NVIDIA's tritonserver image on each node.)
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
LABEL org.opencontainers.image.title="tokenfleet" \
      org.opencontainers.image.description="Kubernetes operator: factory immersion racks and parked EVs as one Triton inference fleet" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm -f /tmp/*.whl \
 && useradd --uid 1000 --no-create-home --shell /usr/sbin/nologin tokenfleet
USER 1000
EXPOSE 8080 9090
ENTRYPOINT ["tokenfleet"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
