"""A minimal stdio MCP server for the proxy tests: answers every tools/call with a JSON-RPC error and records the
calls it received (one line each in the file given as its first argument)."""

import json
import sys

log = open(sys.argv[1], "a", buffering=1)
for line in sys.stdin:
    message = json.loads(line)
    method, request_id = message.get("method"), message.get("id")
    if request_id is None:
        continue
    if method == "initialize":
        result = {"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "erroring", "version": "1"}}
        reply = {"jsonrpc": "2.0", "id": request_id, "result": result}
    elif method == "tools/list":
        reply = {"jsonrpc": "2.0", "id": request_id, "result": {"tools": [
            {"name": "flaky", "inputSchema": {"type": "object"}, "x-unknown": {"kept": True}, "_meta": {"m": 1}}]}}
    elif method == "tools/call":
        log.write(json.dumps(message["params"]) + "\n")
        reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32000, "message": "backend unavailable"}}
    else:
        reply = {"jsonrpc": "2.0", "id": request_id, "result": {}}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
