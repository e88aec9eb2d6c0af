"""allcanuse-mock over Streamable HTTP with the Python MCP SDK: sessions, real processes, the Origin check."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from conftest import call, http_server, http_session, process_state, run, tree_members


def test_tools_over_http_and_tasks_outlive_a_client(state_dir):
    with http_server(state_dir) as url:
        async def first_client():
            async with http_session(url) as session:
                assert len((await session.list_tools()).tools) == 26
                task = await call(session, "create_background_task", {
                    "title": "long", "goal": "outlive the client", "task_type": "command",
                    "condition": {"argv": ["/bin/sleep", "30"]},
                })
                paused = await call(session, "pause_background_task", {"task_id": task["task_id"]})
                assert paused["status"] == "paused"
                return task

        task = run(first_client())
        assert process_state(task["pid"]) is not None, "the task ended with the client's session"

        async def second_client():
            async with http_session(url) as session:
                got = await call(session, "get_background_task", {"task_id": task["task_id"]})
                assert got["status"] == "paused"
                await call(session, "resume_background_task", {"task_id": task["task_id"]})
                cancelled = await call(session, "cancel_background_task", {"task_id": task["task_id"]})
                assert cancelled["status"] == "cancelled"

        run(second_client())
        assert tree_members(task["pid"]) == []


def test_two_clients_at_once_have_their_own_sessions(state_dir):
    with http_server(state_dir) as url:
        async def both():
            async with http_session(url) as a, http_session(url) as b:
                created = await call(a, "create_background_task", {
                    "title": "a", "goal": "a", "task_type": "sleep", "condition": {"duration_ms": 200},
                })
                waited = await call(b, "wait_for_background_task", {"task_id": created["task_id"], "timeout_ms": 10000})
                assert waited["last_result"]["status"] == "completed"

        run(both())


def test_foreign_origin_is_refused(state_dir):
    with http_server(state_dir) as url:
        body = json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}},
        }).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "Origin": "http://evil.example",
        })
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("a foreign Origin was accepted")
        except urllib.error.HTTPError as error:
            assert error.code == 403


def test_wait_progress_over_http(state_dir):
    with http_server(state_dir) as url:
        async def scenario():
            async with http_session(url) as session:
                task = await call(session, "create_background_task", {
                    "title": "nap", "goal": "progress", "task_type": "sleep", "condition": {"duration_ms": 600},
                })
                updates = []

                async def on_progress(progress, total, message):
                    updates.append(progress)

                result = await session.call_tool(
                    "wait_for_background_task",
                    {"task_id": task["task_id"], "timeout_ms": 10000, "poll_interval_ms": 100},
                    progress_callback=on_progress)
                assert result.structured_content["condition_met"] is True
                assert len(updates) >= 2, updates

        run(scenario())


def test_sigterm_with_a_wait_in_flight_ends_promptly(state_dir):
    """A wait blocked on a long task must not keep a SIGTERMed server alive: its task is cancelled first."""
    import re
    import signal
    import subprocess
    import time

    from conftest import MOCK

    process = subprocess.Popen([str(MOCK), "--http", "127.0.0.1:0", "--state-dir", state_dir, "--grace-ms", "300"],
                               stderr=subprocess.PIPE, text=True)
    try:
        url = next(re.search(r"listening on (http://\S+)", line).group(1)
                   for line in process.stderr if "allcanuse-mock: listening on" in line)

        async def scenario():
            async with http_session(url) as session:
                task = await call(session, "create_background_task",
                                  {"title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 600000}})
                waiting = asyncio.create_task(session.call_tool("wait_for_background_task",
                                                                {"task_id": task["task_id"], "timeout_ms": -1}))
                await asyncio.sleep(0.5)
                process.send_signal(signal.SIGTERM)
                started = time.monotonic()
                result = await asyncio.wait_for(waiting, 10)
                assert result.structured_content["last_result"]["status"] == "cancelled", result
                assert time.monotonic() - started < 5

        run(scenario())
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


def _legacy_session(url):
    from raw_client import post
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    status, headers, _ = post(url, init)
    assert status == 200
    return {"Mcp-Session-Id": headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}


def _post_in_background(url, message, headers):
    """POSTs on a thread; the returned list gets (status, every SSE event or JSON answer, seconds taken)."""
    import threading
    import time

    outcome = []

    def post_it():
        started = time.monotonic()
        request = urllib.request.Request(url, data=json.dumps(message).encode(), method="POST", headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, kind, text = response.status, response.headers.get("Content-Type", ""), response.read().decode()
        except Exception as error:  # the stream broke: recorded, the test says what it expected
            outcome.append((None, repr(error), time.monotonic() - started))
            return
        answers = ([json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
                   if kind.startswith("text/event-stream") else ([json.loads(text)] if text else []))
        outcome.append((status, answers, time.monotonic() - started))

    thread = threading.Thread(target=post_it, daemon=True)
    thread.start()
    return thread, outcome


def test_requests_in_flight_at_sigterm_are_answered_in_both_eras(state_dir):
    """A 2025-11-25 session's `wait` of a minute and a 2026-07-28 one, in flight at SIGTERM: each POST gets an error
    under its id (the legacy stream ended without one; the modern one sent keep-alives for 10 s, then the
    connection dropped)."""
    import re
    import signal
    import subprocess
    import time

    from conftest import MOCK

    process = subprocess.Popen([str(MOCK), "--http", "127.0.0.1:0", "--state-dir", state_dir, "--grace-ms", "300"],
                               stderr=subprocess.PIPE, text=True)
    try:
        url = next(re.search(r"listening on (http://\S+)", line).group(1)
                   for line in process.stderr if "allcanuse-mock: listening on" in line)
        legacy = _legacy_session(url)
        thread, outcome = _post_in_background(
            url, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "wait", "arguments": {"duration_ms": 60000}}},
            legacy)
        from raw_client import meta
        modern_thread, modern_outcome = _post_in_background(
            url, {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                  "params": {"name": "wait", "arguments": {"duration_ms": 60000}, "_meta": meta()}},
            {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "wait"})
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        thread.join(15)
        modern_thread.join(15)
        for (status, answers, _), request_id in ((outcome[0], 7), (modern_outcome[0], 8)):
            assert status == 200 and answers and answers[-1]["id"] == request_id, (outcome, modern_outcome)
            assert answers[-1]["error"]["code"] == -32000, (outcome, modern_outcome)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 8
    finally:
        if process.poll() is None:
            process.kill()


def test_a_cancelled_legacy_request_ends_its_stream(state_dir):
    """`notifications/cancelled` gets the request no answer (as over stdio), and its POST stream ends: it sent
    keep-alives until the client hung up."""
    import time

    from raw_client import post

    with http_server(state_dir) as url:
        legacy = _legacy_session(url)
        thread, outcome = _post_in_background(
            url, {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "wait", "arguments": {"duration_ms": 20000}}},
            legacy)
        time.sleep(1.5)  # past the JSON window: the answer is an SSE stream by now
        status, _, _ = post(url, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}, legacy)
        assert status == 202
        thread.join(10)
        assert outcome and outcome[0][0] == 200 and outcome[0][1] == [] and outcome[0][2] < 5, outcome


def _closed_within(sock, seconds):
    """Whether the server closed `sock` (EOF or reset) within `seconds`; the bytes it sent before, if any."""
    import socket
    import time

    sock.settimeout(0.1)
    deadline = time.monotonic() + seconds
    received = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def test_a_request_that_does_not_arrive_whole_in_time_loses_its_connection(state_dir):
    """--http-request-timeout-ms: a connection that sends nothing, or a request's head a line at a time, is closed
    once the time passes; a request being answered (a `wait` streamed for longer than the timeout) is not cut, and
    its connection gets the time again after its answer. Real sockets against the real server."""
    import socket
    import time
    import urllib.parse

    with http_server(state_dir, "--http-request-timeout-ms", "700") as url:
        address = urllib.parse.urlsplit(url)
        endpoint = (address.hostname, address.port)
        silent = socket.create_connection(endpoint)
        trickling = socket.create_connection(endpoint)
        trickling.sendall(b"POST /mcp HTTP/1.1\r\nHost: x\r\n")
        for _ in range(4):  # 0.8 s of header lines, never the blank line that ends the head
            time.sleep(0.2)
            trickling.sendall(b"X-Slow: 1\r\n")
        closed, _ = _closed_within(trickling, 1.0)
        assert closed, "a head sent a line at a time kept its connection past the timeout"
        closed, _ = _closed_within(silent, 1.0)
        assert closed, "a connection that sent nothing stayed open"

        from raw_client import meta
        body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                           "params": {"name": "wait", "arguments": {"duration_ms": 1500}, "_meta": meta()}}).encode()
        waiting = socket.create_connection(endpoint)
        waiting.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n"
            b"Mcp-Method: tools/call\r\nMcp-Name: wait\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        started = time.monotonic()
        waiting.settimeout(5)
        received = b""
        while b"0\r\n\r\n" not in received:  # the end of the chunked SSE stream
            chunk = waiting.recv(4096)
            assert chunk, f"the answer under way was cut after {time.monotonic() - started:.2f} s: {received!r}"
            received += chunk
        assert time.monotonic() - started >= 1.4
        assert b'"id":5' in received and b'"result"' in received, received
        # Kept alive after its answer, with the time started again: open for a moment, closed after the timeout.
        closed, _ = _closed_within(waiting, 0.3)
        assert not closed, "the connection was closed right after its answer"
        closed, _ = _closed_within(waiting, 1.5)
        assert closed, "an idle connection outlived the timeout after its answer"
        for sock in (silent, trickling, waiting):
            sock.close()


def test_connections_past_the_maximum_wait_until_one_closes(state_dir):
    """--http-max-connections: with two connections open, a third is not served (it waits in the listen backlog,
    its request unread) until one of them closes; then it is answered."""
    import socket
    import time
    import urllib.parse

    from raw_client import meta

    with http_server(state_dir, "--http-max-connections", "2") as url:
        address = urllib.parse.urlsplit(url)
        endpoint = (address.hostname, address.port)
        held = [socket.create_connection(endpoint) for _ in range(2)]
        time.sleep(0.2)
        body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "server/discover", "params": {"_meta": meta()}}).encode()
        third = socket.create_connection(endpoint)  # the kernel completes the handshake; the server does not accept
        third.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
            b"MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: server/discover\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)
        closed, received = _closed_within(third, 0.8)
        assert not closed and received == b"", f"a connection past the maximum was served: {received!r}"
        held[0].close()
        third.settimeout(5)
        answer = third.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert b'"id":9' in answer, answer
        for sock in (held[1], third):
            sock.close()


def test_sigterm_with_a_watcher_handle_pending_stops_every_time(tmp_path):
    """A 2026-07-28 task handle whose watcher runs (`wait_for_file`, never satisfied) when SIGTERM comes: the server
    cancels the watcher and stops. It used to hang now and then, one start in eight to twenty: the handle's call,
    cancelled, discarded its watcher while the shutdown's cancel still waited for it, and that wait found no record
    again and again, holding the supervisor. Twenty starts."""
    import re
    import signal
    import subprocess
    import time

    from conftest import MOCK
    from raw_client import modern_request, post

    for attempt in range(20):
        state = tmp_path / f"state-{attempt}"
        process = subprocess.Popen([str(MOCK), "--http", "127.0.0.1:0", "--state-dir", str(state), "--grace-ms", "300"],
                                   stderr=subprocess.PIPE, text=True)
        try:
            url = next(re.search(r"listening on (http://\S+)", line).group(1)
                       for line in process.stderr if "allcanuse-mock: listening on" in line)
            status, _, created = post(url, modern_request(1, "tools/call", {
                "name": "wait_for_file", "arguments": {"path": str(tmp_path / "never"), "timeout_ms": -1}}, tasks=True),
                headers={"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "wait_for_file"})
            assert status == 200 and created["result"]["resultType"] == "task", created
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0, f"start {attempt}"
            assert time.monotonic() - started < 5
        finally:
            if process.poll() is None:
                process.kill()


def test_keep_tasks_sigterm_ends_the_server_and_its_tasks(state_dir):
    """--keep-tasks over HTTP: SIGTERM ends the server promptly with 0 (it hung: stopping the tasks' PID namespace
    waited for a task process that the stopping thread itself would have reaped); the task's process ends with it,
    unrecorded, and the next start marks the task failed."""
    import signal
    import subprocess
    import time

    from conftest import MOCK

    process = subprocess.Popen([str(MOCK), "--http", "127.0.0.1:0", "--state-dir", state_dir, "--grace-ms", "300",
                                "--keep-tasks"], stderr=subprocess.PIPE, text=True)
    try:
        url = next(line.split("listening on ")[1].strip()
                   for line in process.stderr if "allcanuse-mock: listening on" in line)

        async def create():
            async with http_session(url) as session:
                task = await call(session, "create_background_task", {
                    "title": "kept", "goal": "g", "task_type": "command",
                    "condition": {"argv": ["/bin/sh", "-c", "sleep 600 & wait"]}})
                shown = await call(session, "get_background_task", {"task_id": task["task_id"]})
                return task["task_id"], shown["pid"]

        task_id, pid = run(create())
        deadline = time.monotonic() + 5
        while len(tree_members(pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(tree_members(pid)) >= 2, "the task's shell and its sleep"
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - began < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process_state(pid) is None and tree_members(pid) == []

    with http_server(state_dir) as url:
        async def shown_again():
            async with http_session(url) as session:
                return await call(session, "get_background_task", {"task_id": task_id})

        shown = run(shown_again())
    assert shown["status"] == "failed", shown
    assert "supervisor stopped while the task was running" in shown["last_error"], shown


@pytest.mark.parametrize("lenient", [False, True])
def test_a_repeated_key_over_http_is_refused_unless_accepted(state_dir, lenient):
    """A body with a repeated key is refused with -32700 (id null: which id would be the question); with
    --accept-duplicate-keys the server reads it as lenient parsers do, keeping the first copy, over HTTP as over
    stdio (the flag used to reach only the stdio connection)."""
    from raw_client import meta, post

    with http_server(state_dir, *(["--accept-duplicate-keys"] if lenient else [])) as url:
        text = ('{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":' + json.dumps(meta())
                + '},"id":2}').encode()
        status, _, answer = post(url, None, raw=text,
                                 headers={"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"})
    if lenient:
        assert status == 200 and answer["id"] == 1 and "supportedVersions" in answer["result"], (status, answer)
    else:
        assert status == 400 and answer["id"] is None and answer["error"]["code"] == -32700, (status, answer)


def check_allowed_origins(url):
    """An HTTP endpoint started with --allow-origin https://app.example --allow-origin http://dev.example:8080:
    those two and loopback origins are admitted in both eras; any other, however close, is refused with 403."""
    from raw_client import modern_request, post

    modern = modern_request(1, "server/discover")
    modern_headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"}
    legacy = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "origin-e2e", "version": "1"}}}
    for origin in ["https://app.example", "http://dev.example:8080", "http://localhost:5173"]:
        assert post(url, modern, modern_headers | {"Origin": origin})[0] == 200, origin
        assert post(url, legacy, {"Origin": origin})[0] == 200, origin
    for origin in ["https://evil.example", "https://app.example.evil.example", "http://app.example",
                   "https://app.example:8443", "http://dev.example", "https://APP.example.", "null"]:
        for message, headers in [(modern, modern_headers), (legacy, {})]:
            status, _, answer = post(url, message, headers | {"Origin": origin})
            assert status == 403 and answer["error"]["code"] == -32600, (origin, status, answer)


def test_allow_origin_admits_the_origins_it_names_and_no_other(state_dir):
    with http_server(state_dir, "--allow-origin", "https://app.example", "--allow-origin",
                     "http://dev.example:8080") as url:
        check_allowed_origins(url)
    with http_server(state_dir) as url:
        from raw_client import modern_request, post

        status, _, _ = post(url, modern_request(1, "server/discover"), {
            "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover", "Origin": "https://app.example"})
        assert status == 403, "an origin admitted only by a flag was admitted without it"


@pytest.mark.parametrize("level, shown, hidden", [
    ("debug", ["debug", "info"], []), ("info", ["info"], ["debug"]), ("error", [], ["debug", "info"])])
def test_log_level_sets_what_reaches_stderr(state_dir, level, shown, hidden):
    """--log-level: log lines on stderr are at that level or above. A connection that never sends its request is
    closed after --http-request-timeout-ms with a debug line; start and stop are logged at info."""
    import signal
    import socket
    import subprocess
    import time

    from conftest import MOCK

    process = subprocess.Popen([str(MOCK), "--http", "127.0.0.1:0", "--state-dir", state_dir, "--log-level", level,
                                "--http-request-timeout-ms", "100"], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "allcanuse-mock: listening on" in line:
                break
        host, port = lines[-1].split("http://")[1].split("/")[0].rsplit(":", 1)
        with socket.create_connection((host, int(port))) as silent:
            silent.settimeout(5)
            assert silent.recv(1) == b"", "the silent connection was not closed"
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        lines += process.stderr.readlines()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    levels = {line.split()[1] for line in lines if len(line.split()) > 2}
    for name in shown:
        assert name in levels, (level, lines)
    for name in hidden:
        assert name not in levels, (level, lines)
    assert any("did not arrive whole" in line for line in lines) == (level == "debug"), lines
