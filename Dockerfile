# mcpgate container image: `docker build -t mcpgate .` then
#   docker run -p 8080:8080 -v $PWD/mcpgate.yml:/etc/mcpgate/config.yml:ro mcpgate
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MCPGATE_CONFIG=/etc/mcpgate/config.yml \
    MCPGATE_HOST=0.0.0.0 \
    MCPGATE_LOG_FORMAT=json

WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY mcpgate ./mcpgate
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home mcpgate
USER mcpgate
WORKDIR /

EXPOSE 8080
# `mcpgate health` exits 0 only when /readyz answers 200.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["mcpgate", "health", "--url", "http://127.0.0.1:8080/readyz"]
# SIGTERM ends open streams at once and gives in-flight calls server.shutdown_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcpgate"]
CMD ["start"]
