# alert-router: docker build -t alert-router . && docker run -p 9095:9095 -v ar-state:/var/lib/alert-router alert-router
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ALERT_ROUTER_DB=/var/lib/alert-router/alert-router.db

WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
COPY templates ./templates
RUN pip install . \
 && cp -r templates "$(cd / && python -c 'import os, router; print(os.path.dirname(router.__file__))')/templates" \
 && useradd --system --uid 10001 --home-dir /var/lib/alert-router --create-home alert-router \
 && mkdir -p /etc/alert-router \
 && rm -rf /src

COPY routes.yaml /etc/alert-router/routes.yaml
WORKDIR /var/lib/alert-router
USER alert-router
VOLUME ["/var/lib/alert-router"]
EXPOSE 9095

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9095/healthz', timeout=2)"]

ENTRYPOINT ["alert-router", "serve"]
CMD ["--config", "/etc/alert-router/routes.yaml", "--log-format", "json"]
