"""allcanuse-mock in both MCP eras, driven by the Python MCP SDK 2.3.0's `Client` (mode 2026-07-28, auto and legacy)
over stdio and Streamable HTTP, and by raw HTTP requests for every header and status rule of 2026-07-28."""

import asyncio
import contextlib
import json
import pathlib
import time
import urllib.error
import urllib.request

import pytest
from mcp import Client, StdioServerParameters

from conftest import MOCK, http_server, process_state, run, tree_members
from raw_client import post

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}


@contextlib.asynccontextmanager
async def client(transport, state_dir, mode, url=None):
    if transport == "stdio":
        server = StdioServerParameters(command=str(MOCK), args=["--state-dir", state_dir, "--grace-ms", "300"])
        async with Client(server, mode=mode) as connected:
            yield connected
    else:
        async with Client(url, mode=mode) as connected:
            yield connected


async def tool(connected, name, arguments=None):
    result = await connected.call_tool(name, arguments or {})
    assert not result.is_error, f"{name}: {result.content}"
    # The text block the protocol core adds is the structured content as JSON, in either era and transport.
    assert [block.type for block in result.content] == ["text"], result.content
    assert json.loads(result.content[0].text) == result.structured_content, result.content[0].text
    return result.structured_content


async def lifecycle(connected, expected_version, pinned=False):
    assert connected.protocol_version == expected_version
    if not pinned:  # a pinned client skips server/discover, so it has no server info
        assert connected.server_info.name == "allcanuse-mock"
    tools = await connected.list_tools()
    assert len(tools.tools) == 26
    assert all(t.output_schema and t.output_schema.get("type") == "object" for t in tools.tools)
    task = await tool(connected, "create_background_task", {
        "title": "ticker", "goal": "tick", "task_type": "command",
        "condition": {"command": "for i in $(seq 1 400); do echo tick $i; sleep 0.05; done & sleep 60"},
    })
    task_id, pid = task["task_id"], task["pid"]
    assert task["status"] == "running" and process_state(pid) is not None

    paused = await tool(connected, "pause_background_task", {"task_id": task_id, "reason": "e2e"})
    assert paused["status"] == "paused"
    if paused.get("cgroup"):
        assert "frozen 1" in (pathlib.Path(paused["cgroup"]) / "cgroup.events").read_text()
    else:
        assert process_state(pid) == "T"
    waited = await tool(connected, "wait_for_background_task", {"task_id": task_id, "timeout_ms": 50})
    assert waited["condition_met"] is False
    resumed = await tool(connected, "resume_background_task", {"task_id": task_id})
    assert resumed["status"] == "running" and process_state(pid) not in (None, "T")

    event = await tool(connected, "append_task_event", {"task_id": task_id, "message": "hello", "data": {"era": expected_version}})
    events = await tool(connected, "list_task_events", {"task_id": task_id})
    assert any(e["event_id"] == event["event_id"] and e["data"] == {"era": expected_version} for e in events["events"])
    await asyncio.sleep(0.3)
    output = await tool(connected, "get_task_output", {"task_id": task_id, "tail_bytes": 4096})
    assert "tick 1\n" in output["text"]

    group = pid  # tasks lead their own process group
    assert len(tree_members(group)) >= 2
    cancelled = await tool(connected, "cancel_background_task", {"task_id": task_id})
    assert cancelled["status"] == "cancelled"
    assert tree_members(group) == [] and process_state(pid) is None

    short = await tool(connected, "create_background_task", {
        "title": "short", "goal": "wait", "task_type": "command", "condition": {"argv": ["/bin/sh", "-c", "sleep 0.2"]},
    })
    done = await tool(connected, "wait_for_background_task", {"task_id": short["task_id"], "timeout_ms": 10000})
    assert done["condition_met"] is True and done["last_result"]["status"] == "completed"
    missing = await connected.call_tool("get_background_task", {"task_id": "0" * 32})
    assert missing.is_error


@pytest.mark.parametrize("mode, expected", [(MODERN, MODERN), ("auto", MODERN), ("legacy", "2025-11-25")])
def test_lifecycle_over_stdio_in_each_mode(state_dir, mode, expected):
    async def scenario():
        async with client("stdio", state_dir, mode) as connected:
            await lifecycle(connected, expected, pinned=mode == MODERN)

    run(scenario())


def test_lifecycle_over_http_in_each_mode_on_one_endpoint(state_dir):
    """One server, one endpoint: a legacy session stays open while modern clients are served beside it."""
    with http_server(state_dir) as url:
        async def scenario():
            async with client("http", state_dir, "legacy", url) as legacy:
                for mode in (MODERN, "auto"):
                    async with client("http", state_dir, mode, url) as modern:
                        await lifecycle(modern, MODERN, pinned=mode == MODERN)
                await lifecycle(legacy, "2025-11-25")

        run(scenario())


def test_progress_on_the_requests_own_stream_in_both_eras(state_dir):
    with http_server(state_dir) as url:
        async def scenario():
            for mode in (MODERN, "legacy"):
                async with client("http", state_dir, mode, url) as connected:
                    task = await tool(connected, "create_background_task", {
                        "title": "nap", "goal": "progress", "task_type": "sleep", "condition": {"duration_ms": 600},
                    })
                    updates = []

                    async def on_progress(progress, total, message):
                        updates.append(progress)

                    result = await connected.call_tool(
                        "wait_for_background_task",
                        {"task_id": task["task_id"], "timeout_ms": 10000, "poll_interval_ms": 100},
                        progress_callback=on_progress)
                    assert result.structured_content["condition_met"] is True
                    assert len(updates) >= 2, (mode, updates)

        run(scenario())


def test_listen_is_acknowledged_and_closed_gracefully_at_shutdown(state_dir):
    async def scenario():
        async with client("stdio", state_dir, MODERN) as connected:
            async with connected.listen(tools_list_changed=True, prompts_list_changed=True) as subscription:
                assert subscription.honored.tools_list_changed is True
                assert not subscription.honored.prompts_list_changed

    run(scenario())


# --- raw HTTP: every header and status rule -------------------------------------------------------------------


def modern(method, params=None, request_id=1, name=None, version=MODERN, method_header=None):
    message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": META}}
    headers = {"MCP-Protocol-Version": version, "Mcp-Method": method_header or method}
    if name is not None:
        headers["Mcp-Name"] = name
    return message, headers


def request(url, method, session=None, version=None):
    headers = {"Accept": "text/event-stream"}
    if session:
        headers["Mcp-Session-Id"] = session
    if version:
        headers["MCP-Protocol-Version"] = version
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def test_http_rules_of_2026_07_28(state_dir):
    with http_server(state_dir) as url:
        # server/discover: versions, capabilities with extensions, cache hints, identity; no session header.
        status, headers, answer = post(url, *modern("server/discover"))
        assert status == 200 and "Mcp-Session-Id" not in headers
        result = answer["result"]
        assert result["resultType"] == "complete"
        assert result["supportedVersions"] == [MODERN, "2025-11-25"]
        assert "tools" in result["capabilities"] and isinstance(result["capabilities"]["extensions"], dict)
        assert result["ttlMs"] > 0 and result["cacheScope"] in ("public", "private")
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "allcanuse-mock"
        assert result["instructions"]

        # tools/list: cache hints, the same order every time.
        _, _, first = post(url, *modern("tools/list"))
        _, _, second = post(url, *modern("tools/list", request_id=2))
        assert first["result"]["ttlMs"] > 0 and first["result"]["cacheScope"] == "public"
        assert [t["name"] for t in first["result"]["tools"]] == [t["name"] for t in second["result"]["tools"]]

        # A tool call with the right Mcp-Name; its result has resultType.
        status, _, answer = post(url, *modern("tools/call", {"name": "get_scheduler_time", "arguments": {}}, name="get_scheduler_time"))
        assert status == 200 and answer["result"]["resultType"] == "complete" and not answer["result"]["isError"]

        def refused(message, headers, status, code):
            got_status, _, answer = post(url, message, headers)
            assert (got_status, answer["error"]["code"]) == (status, code), (message, headers, got_status, answer)
            return answer

        call = {"name": "get_scheduler_time", "arguments": {}}
        message, headers = modern("tools/call", call, name="get_scheduler_time")
        refused(message, {k: v for k, v in headers.items() if k != "MCP-Protocol-Version"}, 400, -32020)
        refused(message, {k: v for k, v in headers.items() if k != "Mcp-Method"}, 400, -32020)
        refused(message, {k: v for k, v in headers.items() if k != "Mcp-Name"}, 400, -32020)
        refused(message, headers | {"Mcp-Name": "cancel_background_task"}, 400, -32020)
        refused(message, headers | {"Mcp-Method": "tools/list"}, 400, -32020)
        refused(*modern("tools/call", call, name="get_scheduler_time", version="2026-07-29"), 400, -32020)
        # The same unsupported version in header and body: -32022 naming what is served.
        future = {"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {"_meta": {**META, "io.modelcontextprotocol/protocolVersion": "2027-03-01"}}}
        answer = refused(future, {"MCP-Protocol-Version": "2027-03-01", "Mcp-Method": "tools/list"}, 400, -32022)
        assert answer["error"]["data"]["supported"] == [MODERN, "2025-11-25"] and answer["id"] == 9
        # _meta missing or of the wrong types.
        refused({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}, {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}, 400, -32602)
        refused({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {**META, "io.modelcontextprotocol/clientCapabilities": "all"}}},
                {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}, 400, -32602)
        # Removed and unknown methods: 404 with -32601; initialize sent as 2026-07-28 too.
        refused(*modern("ping"), 404, -32601)
        refused(*modern("logging/setLevel", {"level": "info"}), 404, -32601)
        refused(*modern("no/such/method"), 404, -32601)
        initialize = {"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": {"protocolVersion": MODERN, "capabilities": {}, "_meta": META}}
        refused(initialize, {"MCP-Protocol-Version": MODERN, "Mcp-Method": "initialize"}, 404, -32601)
        # A batch is not 2026-07-28.
        status, _, answer = post(url, [modern("tools/list")[0]], {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
        assert status == 400 and answer["error"]["code"] == -32600 and answer["id"] is None
        # Notifications are accepted and dropped.
        status, _, answer = post(url, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
                                 {"MCP-Protocol-Version": MODERN, "Mcp-Method": "notifications/cancelled"})
        assert status == 202 and answer is None
        # A sessionless GET or DELETE: 405; a foreign Origin: 403, in either era.
        assert request(url, "GET", version=MODERN)[0] == 405
        assert request(url, "DELETE", version=MODERN)[0] == 405
        message, headers = modern("tools/list")
        assert post(url, message, headers | {"Origin": "http://evil.example"})[0] == 403
        assert post(url, message, headers | {"Origin": "http://localhost:3000"})[0] == 200
        # Not JSON, and a body nested too deep: parse errors with id null, and the server is still there.
        status, _, answer = post(url, None, headers, raw=b"{nope")
        assert status == 400 and answer["error"]["code"] == -32700 and answer["id"] is None
        status, _, answer = post(url, None, headers, raw=b"[" * 100000 + b"]" * 100000)
        assert status == 400 and answer["error"]["code"] == -32700
        assert post(url, *modern("tools/list", request_id=77))[2]["id"] == 77


def test_legacy_sessions_keep_their_rules_beside_modern_requests(state_dir):
    with http_server(state_dir) as url:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
        status, headers, answer = post(url, init)
        session = headers.get("Mcp-Session-Id")
        assert status == 200 and session and answer["result"]["protocolVersion"] == "2025-11-25"
        legacy = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        status, _, answer = post(url, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, legacy)
        assert status == 200 and answer["result"] == {}
        # A legacy result carries no 2026-07-28 fields; a modern request inside the session is refused.
        _, _, answer = post(url, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, legacy)
        assert "resultType" not in answer["result"] and len(answer["result"]["tools"]) == 26
        _, _, answer = post(url, {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": META}}, legacy)
        assert answer["error"]["code"] == -32600
        # A request whose id is neither a string nor an integer: -32600 under id null, never a silent 202 (the
        # session's answer would reach no stream, and the client would wait forever).
        for bad_id in (1.5, None, True, {}, 123456789012345678901234567890):
            status, _, answer = post(url, {"jsonrpc": "2.0", "id": bad_id, "method": "tools/list"}, legacy)
            assert status == 400 and answer["error"]["code"] == -32600 and answer["id"] is None, (bad_id, status, answer)
        status, _, answer = post(url, [1, {"jsonrpc": "2.0", "id": 1.5, "method": "ping"}], legacy)
        assert status == 400 and [a["error"]["code"] for a in answer] == [-32600, -32600] and answer[0]["id"] is None
        # Beside a valid request, on that request's stream.
        batch = [{"jsonrpc": "2.0", "id": 2.5, "method": "ping"}, {"jsonrpc": "2.0", "id": 12, "method": "ping"}]
        stream = urllib.request.Request(url, data=json.dumps(batch).encode(), method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **legacy})
        with urllib.request.urlopen(stream, timeout=10) as response:
            events = [json.loads(line[5:]) for line in response.read().decode().splitlines() if line.startswith("data:")]
        assert sorted((e["id"] is None, "error" in e) for e in events) == [(False, False), (True, True)], events
        # No session and not initialize; an unknown session.
        status, _, answer = post(url, {"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
        assert status == 400 and answer["id"] == 5
        status, _, _ = post(url, {"jsonrpc": "2.0", "id": 6, "method": "tools/list"}, {"Mcp-Session-Id": "nope"})
        assert status == 404
        # Modern requests meanwhile; one that carries a session id is still stateless (the id is ignored).
        assert post(url, *modern("tools/list"))[0] == 200
        message, headers = modern("tools/list", request_id=8)
        status, answer_headers, answer = post(url, message, headers | {"Mcp-Session-Id": "stale"})
        assert status == 200 and answer["result"]["resultType"] == "complete" and "Mcp-Session-Id" not in answer_headers
        # DELETE ends the session.
        assert request(url, "DELETE", session=session)[0] == 200
        status, _, _ = post(url, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, legacy)
        assert status == 404


def test_stdio_refuses_the_other_era_and_bad_envelopes(state_dir):
    import subprocess

    def converse(lines):
        process = subprocess.run([str(MOCK), "--state-dir", state_dir], input="\n".join(lines) + "\n",
                                 capture_output=True, text=True, timeout=30)
        assert process.returncode == 0, process.stderr
        return [json.loads(line) for line in process.stdout.splitlines()]

    def line(message):
        return json.dumps(message)

    # Modern first: initialize is refused with -32022, removed methods -32601, bad _meta -32602.
    answers = converse([
        line({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": META}}),
        line({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}),
        line({"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"_meta": META}}),
        line({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": {**META, "io.modelcontextprotocol/protocolVersion": "soon"}}}),
        line({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": {**META, "io.modelcontextprotocol/protocolVersion": "2030-01-01"}}}),
        line({"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": {}}),
        line({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "get_scheduler_time", "_meta": META}}),
    ])
    by_id = {a["id"]: a for a in answers}
    assert by_id[1]["result"]["supportedVersions"][0] == MODERN
    assert by_id[2]["error"]["code"] == -32022 and by_id[2]["error"]["data"]["supported"] == [MODERN, "2025-11-25"]
    assert by_id[3]["error"]["code"] == -32601
    assert by_id[4]["error"]["code"] == -32602
    assert by_id[5]["error"]["code"] == -32022
    assert by_id[6]["error"]["code"] == -32602
    assert by_id[7]["result"]["resultType"] == "complete" and not by_id[7]["result"]["isError"]

    # Legacy first: modern requests are refused with -32600, legacy ones answered.
    answers = converse([
        line({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}),
        line({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": META}}),
        line({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    ])
    by_id = {a["id"]: a for a in answers}
    assert by_id[2]["error"]["code"] == -32600 and by_id[3]["result"] == {}


def test_closing_the_stream_cancels_the_request(state_dir, tmp_path):
    """A 2026-07-28 client cancels by closing the response stream: the server notices (its keep-alive write fails)
    and cancels the request, and the endpoint goes on serving."""
    import http.client
    import subprocess
    import urllib.parse

    log = tmp_path / "mock.log"
    with open(log, "w") as errors:
        process = subprocess.Popen([str(MOCK), "--http", "127.0.0.1:0", "--state-dir", state_dir], stderr=errors)
    try:
        url = None
        for _ in range(200):
            import re
            found = re.search(r"allcanuse-mock: listening on (http://\S+)", log.read_text())
            if found:
                url = found.group(1)
                break
            time.sleep(0.05)
        assert url
        _, _, created = post(url, *modern("tools/call", {"name": "create_background_task", "arguments": {
            "title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 60000}}}, name="create_background_task"))
        task_id = created["result"]["structuredContent"]["task_id"]
        message, headers = modern("tools/call", {"name": "wait_for_background_task", "arguments": {
            "task_id": task_id, "timeout_ms": -1}}, request_id="w", name="wait_for_background_task")
        parts = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.request("POST", parts.path, body=json.dumps(message), headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        assert response.readline()  # the stream is open (a keep-alive comment)
        connection.sock.close()
        connection.close()
        for _ in range(100):
            if "cancelled tools/call \"w\": the client closed its stream" in log.read_text():
                break
            time.sleep(0.05)
        assert "cancelled tools/call \"w\": the client closed its stream" in log.read_text()
        status, _, answer = post(url, *modern("tools/call", {"name": "get_background_task", "arguments": {"task_id": task_id}},
                                               name="get_background_task"))
        assert status == 200 and answer["result"]["structuredContent"]["runtime_status"] == "running"
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0


# --- one connection, several requests: the two paths of a POST --------------------------------------------------


def raw_post(host, message, headers):
    body = json.dumps(message).encode()
    lines = ["POST /mcp HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             "Accept: application/json, text/event-stream", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(stream):
    """One HTTP/1.1 response off a buffered socket file: (status, headers with lowercase names, the answer's JSON:
    the body, or an SSE stream's last event)."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while (line := stream.readline().rstrip(b"\r\n")):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = stream.read(int(headers["content-length"]))
    else:
        assert headers.get("transfer-encoding") == "chunked", headers
        body = b""
        while (size := int(stream.readline().strip(), 16)):
            body += stream.read(size)
            stream.readline()
        stream.readline()
    text = body.decode()
    if headers.get("content-type", "").startswith("text/event-stream"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    return int(status_line.split()[1]), headers, json.loads(text) if text else None


def test_pipelined_requests_are_answered_in_order_whichever_path_serves_them(state_dir):
    """2026-07-28 POSTs with their version header are served in front of Hummingbird (`ModernPostHandler`), every
    other request by Hummingbird. Requests written at once on one connection must still be answered in their order,
    each whole: a slow modern call (an SSE stream, since it outlasts the JSON window) holds back the legacy request
    behind it, which holds back the modern ones behind it in turn."""
    import socket
    import urllib.parse

    legacy = {"jsonrpc": "2.0", "method": "tools/list", "params": {}}
    with http_server(state_dir) as url:
        parts = urllib.parse.urlsplit(url)
        host = f"{parts.hostname}:{parts.port}"
        slow = modern("tools/call", {"name": "wait", "arguments": {"duration_ms": 400, "reason": "pipelining"}},
                      request_id="slow", name="wait")
        discover = modern("server/discover", request_id=3)
        last = modern("tools/call", {"name": "get_scheduler_time", "arguments": {}}, request_id=5, name="get_scheduler_time")
        batch = (raw_post(host, *slow) + raw_post(host, {**legacy, "id": 2}, {})
                 + raw_post(host, *discover) + raw_post(host, {**legacy, "id": 4}, {})
                 + raw_post(host, last[0], last[1] | {"Connection": "close"}))
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
            connection.sendall(batch)
            stream = connection.makefile("rb")
            answers = [read_response(stream) for _ in range(5)]
            assert stream.read() == b""  # the last request asked for the connection to close
        assert [answer["id"] for _, _, answer in answers] == ["slow", 2, 3, 4, 5]
        assert [status for status, _, _ in answers] == [200, 400, 200, 400, 200]
        assert answers[0][1]["content-type"].startswith("text/event-stream")
        assert answers[0][2]["result"]["structuredContent"]["waited_ms"] >= 400
        assert answers[2][2]["result"]["supportedVersions"][0] == MODERN

        # A modern request alone with Connection: close: answered, then the connection ends.
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
            connection.sendall(raw_post(host, discover[0], discover[1] | {"Connection": "close"}))
            stream = connection.makefile("rb")
            status, headers, answer = read_response(stream)
            assert (status, answer["id"], headers["connection"]) == (200, 3, "close")
            assert headers["server"] == "allcanuse-mock" and headers["date"].endswith(" GMT")
            assert stream.read() == b""

        # Keep-alive: many modern requests and legacy ones interleaved on one connection, one at a time.
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
            stream = connection.makefile("rb")
            for index in range(20):
                if index % 3 == 2:
                    connection.sendall(raw_post(host, {**legacy, "id": index}, {}))
                    assert read_response(stream)[0] == 400
                else:
                    connection.sendall(raw_post(host, *modern("server/discover", request_id=index)))
                    assert read_response(stream)[2]["id"] == index


def test_http_1_0_requests_on_the_routers_path_get_http_1_0_answers_and_a_closed_connection(state_dir):
    """Hummingbird answers in HTTP/1.1, in chunks, whatever was asked, and kept an HTTP/1.0 connection open: a 1.0
    client could not read the body and waited forever. A sessionless GET (405) and a legacy initialize (a body of
    unknown length, which then runs to the connection's end) are answered as 1.0, and the connection closes."""
    import socket
    import urllib.parse

    with http_server(state_dir) as url:
        address = urllib.parse.urlsplit(url)
        init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                      "clientInfo": {"name": "http10", "version": "1"}}}).encode()
        requests = [
            b"GET /mcp HTTP/1.0\r\nHost: x\r\n\r\n",
            b"POST /mcp HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, "
            + b"text/event-stream\r\nContent-Length: " + str(len(init)).encode() + b"\r\n\r\n" + init,
        ]
        answers = []
        for request in requests:
            with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
                connection.sendall(request)
                received = b""
                while (chunk := connection.recv(65536)):  # a timeout here: the connection was kept open
                    received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {name.strip().lower(): value.strip() for name, _, value in (l.partition(":") for l in lines[1:])}
            answers.append((lines[0], headers, body))
        (get_status, get_headers, _), (post_status, post_headers, post_body) = answers
        assert get_status.startswith("HTTP/1.0 405") and get_headers.get("connection") == "close", answers[0]
        assert post_status.startswith("HTTP/1.0 200") and "transfer-encoding" not in post_headers, answers[1]
        assert post_headers.get("mcp-session-id")
        text = post_body.decode()
        answer = json.loads(text) if text.lstrip().startswith("{") else \
            [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")][-1]
        assert answer["result"]["protocolVersion"] == "2025-11-25", text
