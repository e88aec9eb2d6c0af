"""allcanuse-mock over Streamable HTTP with the Python MCP SDK: sessions, real processes, the Origin check."""

import asyncio
import json
import urllib.error
import urllib.request

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
