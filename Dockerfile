# Production image: gunicorn with uvicorn workers, settings from CTT_* variables.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md openapi.yaml ./
COPY broker ./broker
COPY handlers ./handlers
COPY emulator ./emulator
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app ctt
WORKDIR /app
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER ctt
ENV CTT_MODE=production \
    CTT_BIND=0.0.0.0:8080 \
    CTT_DATA_DIR=/app/var
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health').status == 200 else 1)"
# Run `ctt-broker db upgrade` once per release (e.g. a Kubernetes Job) before starting.
CMD ["ctt-broker", "serve"]
