# alert-router's image: the wheel (package + templates) in a virtual environment, run as a
# non-root user. README.md "Running in a container" says how to build and run it.
#   docker build -t alert-router .
#   docker run -p 9095:9095 -v alert-router-state:/var/lib/alert-router alert-router
# The default command serves the baked example config in --dry-run (notifications are logged,
# never sent); with a config holding real credentials, pass the arguments without --dry-run:
#   docker run ... alert-router --config /etc/alert-router/routes.yaml --log-format json
# BASE: any Debian-based image with Python 3.11+ and its venv module (make image-test builds one
# with mmdebstrap when python:3.11-slim cannot be pulled).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY router ./router
COPY templates ./templates
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --quiet --no-deps \
      --wheel-dir /dist .

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/alert-router/bin:$PATH \
    ALERT_ROUTER_DB=/var/lib/alert-router/alert-router.db
COPY --from=build /dist /dist
RUN python3 -m venv /opt/alert-router \
 && /opt/alert-router/bin/pip install --no-cache-dir --disable-pip-version-check --quiet /dist/*.whl \
 && rm -rf /dist \
 && groupadd --system --gid 10001 alert-router \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/alert-router --create-home \
      --shell /usr/sbin/nologin alert-router
COPY routes.yaml /etc/alert-router/routes.yaml

WORKDIR /var/lib/alert-router
USER 10001:10001
VOLUME ["/var/lib/alert-router"]
EXPOSE 9095

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9095/healthz', timeout=2)"]

ENTRYPOINT ["alert-router", "serve"]
CMD ["--config", "/etc/alert-router/routes.yaml", "--log-format", "json", "--dry-run"]
