# gotk-relay: slim, non-root image. Build: docker build -t gotk-relay .
FROM python:3.12-slim AS build
# gcc builds the compiled accelerators (setup.py: request scanning, routing, 2.0 conversion,
# Datadog/OTLP conversion, snappy compression); the image ships Python's headers. Only the
# wheels go on.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
# libsnappy compresses routed requests (wire/_snappy.c loads it; without it, cramjam does).
RUN apt-get update && apt-get install -y --no-install-recommends libsnappy1v5 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin relay
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
EXPOSE 9201
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9201/-/healthy').status != 200)"
ENTRYPOINT ["gotk-relay", "serve"]
