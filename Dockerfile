# Production image of ctt-broker: the wheel tests/production/test_end_to_end.py installs and
# runs, nothing else. This image is not built in this repository's checks; build it with
#   python -m pip wheel --no-deps -w dist .
#   docker build -t ctt-broker:0.1.0 .
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app ctt
WORKDIR /app
COPY dist/ctt_broker-*.whl constraints.txt /tmp/
# The dependencies at the versions the tests ran with (constraints.txt), not the newest.
RUN python -m pip install --no-cache-dir -c /tmp/constraints.txt /tmp/ctt_broker-*.whl \
    && rm -f /tmp/ctt_broker-*.whl /tmp/constraints.txt
USER ctt
ENV CTT_MODE=production \
    CTT_BIND=0.0.0.0:8080 \
    CTT_DATA_DIR=/app/var \
    PROMETHEUS_MULTIPROC_DIR=/app/var/metrics
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health/ready').status == 200 else 1)"
# Run `ctt-broker db upgrade` once per release (a Kubernetes Job, or compose's `migrate`)
# before starting; `ctt-broker worker` runs from the same image.
STOPSIGNAL SIGTERM
CMD ["ctt-broker", "serve"]
