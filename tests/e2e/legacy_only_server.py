"""A strict 2025-11-25 stdio MCP server for the proxy tests: it knows nothing of 2026-07-28 (server/discover is an
unknown method, a request carrying the modern _meta keys is refused), requires its handshake first, and records
every message it received (one JSON line each in the file given as its first argument)."""

import json
import sys

log = open(sys.argv[1], "a", buffering=1)
initialized = False


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    log.write(json.dumps(message) + "\n")
    method, request_id = message.get("method"), message.get("id")
    meta = (message.get("params") or {}).get("_meta") or {}
    if any(key.startswith("io.modelcontextprotocol/") for key in meta):
        if request_id is not None:
            send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32600, "message": "unknown _meta keys"}})
        continue
    if method == "notifications/initialized":
        initialized = True
        continue
    if request_id is None:
        continue
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": request_id, "result": {
            "protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": True}},
            "serverInfo": {"name": "legacy-only", "version": "7"}, "instructions": "old but gold"}})
    elif not initialized:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32002, "message": "not initialized"}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": [
            {"name": "echo", "inputSchema": {"type": "object"}},
            {"name": "secret", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":
        token = meta.get("progressToken")
        if token is not None:
            send({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}})
        # A server request a 2026-07-28 client cannot be sent: the proxy must refuse it for the client.
        send({"jsonrpc": "2.0", "id": "ask-1", "method": "roots/list"})
        arguments = message["params"].get("arguments") or {}
        send({"jsonrpc": "2.0", "id": request_id, "result": {
            "content": [{"type": "text", "text": json.dumps(arguments)}], "structuredContent": arguments, "isError": False}})
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": request_id, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})
