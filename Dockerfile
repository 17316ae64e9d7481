# mcpgate container image:
#   docker build -t mcpgate .
#   docker run -p 8080:8080 -v $PWD/mcpgate.yml:/etc/mcpgate/config.yml:ro -e GITHUB_MCP_TOKEN mcpgate
# With runtimes for stdio upstreams started by npx or uvx:
#   docker build --build-arg STDIO_RUNTIMES="node uv" -t mcpgate:stdio .
ARG PYTHON=3.12

# -- build: the package and its dependencies, in a virtual environment of their own -------------
FROM python:${PYTHON}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY mcpgate ./mcpgate
RUN python -m venv /opt/mcpgate && /opt/mcpgate/bin/pip install '.[analytics]'

# -- run: that environment alone, as a user without privileges ----------------------------------
FROM python:${PYTHON}-slim
ARG STDIO_RUNTIMES=""
RUN set -eu; \
    case " $STDIO_RUNTIMES " in *" node "*) \
        apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*;; \
    esac; \
    case " $STDIO_RUNTIMES " in *" uv "*) pip install --no-cache-dir uv;; esac; \
    useradd --system --uid 10001 --home-dir /var/lib/mcpgate --create-home mcpgate
COPY --from=build /opt/mcpgate /opt/mcpgate
ENV PATH=/opt/mcpgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MCPGATE_HOST=0.0.0.0 \
    MCPGATE_LOG_FORMAT=json
USER 10001
WORKDIR /var/lib/mcpgate
EXPOSE 8080
# `mcpgate health` exits 0 only when the gateway's /readyz answers 200 (a base URL means /readyz).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["mcpgate", "health", "--url", "http://127.0.0.1:8080"]
# SIGTERM ends open streams at once and gives in-flight calls server.shutdown_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcpgate"]
CMD ["start", "-c", "/etc/mcpgate/config.yml"]
