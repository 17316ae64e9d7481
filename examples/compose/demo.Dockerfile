# The bundled demo MCP server (examples/servers/demo_server.py) over Streamable HTTP on :9000.
FROM python:3.12-slim
RUN pip install --no-cache-dir "mcp>=2.3,<3" && useradd --system --uid 10002 demo
COPY examples/servers/demo_server.py /srv/demo_server.py
USER 10002
EXPOSE 9000
CMD ["python", "/srv/demo_server.py", "--host", "0.0.0.0", "--port", "9000"]
