"""corral proxy in front of allcanuse-mock: the Python MCP SDK as the client, raw JSON-RPC for what it cannot send."""

import asyncio
import contextlib
import json
import subprocess

import pytest

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from conftest import BIN_DIR, MOCK, call, listening, process_state, run
from raw_client import stop_reading_then_create, write_modern

CORRAL = BIN_DIR / "corral"


def write_policy(path):
    path.write_text(json.dumps({
        "version": "1", "default": "deny", "hide": ["cancel_background_task"],
        "tools": {
            "create_background_task": {"limits": [{"counter": "creates", "window": "hour", "max": 3, "scope": "grant"}]},
            "list_background_tasks": {}, "get_background_task": {},
        },
    }))


def proxy_args(policy, audit, state_dir):
    return ["proxy", "--policy", str(policy), "--audit", str(audit), "--", str(MOCK), "--state-dir", state_dir]


def test_hide_default_deny_and_exact_rate_limit(state_dir, tmp_path):
    policy, audit = tmp_path / "policy.json", tmp_path / "audit.jsonl"
    write_policy(policy)

    async def scenario():
        params = StdioServerParameters(command=str(CORRAL), args=proxy_args(policy, audit, state_dir))
        async with stdio_client(params) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                names = {tool.name for tool in (await session.list_tools()).tools}
                assert "cancel_background_task" not in names and "create_background_task" in names
                arguments = {"title": "t", "goal": "secret-goal-value", "task_type": "sleep", "condition": {"duration_ms": 20000}}
                allowed = 0
                for _ in range(5):
                    result = await session.call_tool("create_background_task", arguments)
                    if not result.is_error:
                        allowed += 1
                        task_id = result.structured_content["task_id"]
                    else:
                        assert result.content[0].text.startswith("[POLICY DENIED] Rate limit of 3 per hour")
                assert allowed == 3
                denied = await session.call_tool("cancel_background_task", {"task_id": task_id})
                assert denied.is_error and "hidden by policy" in denied.content[0].text
                # The server never saw the cancel: the task still runs, and it ran exactly three creates.
                task = await call(session, "get_background_task", {"task_id": task_id})
                assert task["status"] == "waiting" and task["runtime_status"] == "running"
                listing = await call(session, "list_background_tasks", {})
                assert listing["total_count"] == 3
                other = await session.call_tool("get_scheduler_time", {})
                assert other.is_error and "not permitted by policy" in other.content[0].text

    run(scenario())
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(lines) == 9  # 5 creates, cancel, get, list, get_scheduler_time: one line per tools/call decision
    create = next(line for line in lines if line["tool"] == "create_background_task")
    assert create["argument_keys"] == ["condition", "goal", "task_type", "title"]
    assert len(create["arguments_sha256"]) == 64 and len(create["policy_revision"]) == 64
    assert "secret-goal-value" not in audit.read_text()
    assert [line["decision"] for line in lines if line["tool"] == "create_background_task"] == ["allow"] * 3 + ["deny"] * 2


def test_malformed_params_and_batches(state_dir, tmp_path):
    policy, audit = tmp_path / "policy.json", tmp_path / "audit.jsonl"
    write_policy(policy)
    proxy = subprocess.Popen([str(CORRAL), *proxy_args(policy, audit, state_dir)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def send(message):
        proxy.stdin.write(json.dumps(message) + "\n")
        proxy.stdin.flush()

    def until(ids):
        found = {}
        while set(found) != ids:
            line = proxy.stdout.readline()
            assert line, "the proxy closed its output"
            message = json.loads(line)
            for element in message if isinstance(message, list) else [message]:
                if element.get("id") in ids:
                    found[element["id"]] = element
        return found

    send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    until({0})
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    # arguments that are not an object: denied by the proxy, never forwarded
    send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_background_task", "arguments": "x"}})
    # params that are not an object at all
    send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": ["get_background_task"]})
    # a batch with one hidden and one allowed call: each decided alone
    send([
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "cancel_background_task", "arguments": {"task_id": "x"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "list_background_tasks", "arguments": {}}},
    ])
    answers = until({1, 2, 3, 4})
    for denied in (1, 2, 3):
        assert answers[denied]["result"]["isError"] is True
        assert answers[denied]["result"]["content"][0]["text"].startswith("[POLICY DENIED]")
    assert "hidden by policy" in answers[3]["result"]["content"][0]["text"]
    assert answers[4]["result"]["structuredContent"]["count"] == 0  # forwarded in the batch and answered by the mock
    proxy.stdin.close()
    assert proxy.wait(timeout=20) == 0


def test_hot_reload_applies_valid_and_refuses_invalid(state_dir, tmp_path):
    import time

    policy, audit = tmp_path / "policy.json", tmp_path / "audit.jsonl"
    write_policy(policy)
    notifications = []

    async def on_message(message):
        notifications.append(message)

    async def scenario():
        args = proxy_args(policy, audit, state_dir)
        params = StdioServerParameters(command=str(CORRAL), args=[args[0], "--reload-interval-ms", "100", *args[1:]])
        async with stdio_client(params) as streams:
            async with ClientSession(streams[0], streams[1], message_handler=on_message) as session:
                await session.initialize()
                denied = await session.call_tool("get_scheduler_time", {})
                assert denied.is_error
                # A valid change: the next call follows it, and the client hears that the tool list changed.
                policy.write_text(json.dumps({"version": "1", "default": "allow", "hide": ["cancel_background_task"]}))
                time.sleep(0.4)
                allowed = await session.call_tool("get_scheduler_time", {})
                assert not allowed.is_error
                # An invalid change is refused: the previous (valid) policy stays.
                policy.write_text('{"version": "1", "default": "maybe"}')
                time.sleep(0.4)
                still = await session.call_tool("get_scheduler_time", {})
                assert not still.is_error
                hidden = await session.call_tool("cancel_background_task", {"task_id": "x"})
                assert hidden.is_error

    run(scenario())
    assert any("tools/list_changed" in repr(message) for message in notifications), notifications


def test_dry_run_records_but_forwards(state_dir, tmp_path):
    policy, audit = tmp_path / "policy.json", tmp_path / "audit.jsonl"
    write_policy(policy)

    async def scenario():
        args = proxy_args(policy, audit, state_dir)
        params = StdioServerParameters(command=str(CORRAL), args=[args[0], "--dry-run", *args[1:]])
        async with stdio_client(params) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                result = await session.call_tool("get_scheduler_time", {})
                assert not result.is_error  # forwarded although the policy denies it

    run(scenario())
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert lines[-1]["tool"] == "get_scheduler_time" and lines[-1]["decision"] == "deny"


def test_counters_roll_back_when_the_server_errors_and_unknown_fields_survive(tmp_path):
    import pathlib
    import sys

    policy, calls = tmp_path / "policy.json", tmp_path / "calls.jsonl"
    policy.write_text(json.dumps({"version": "1", "default": "allow", "tools": {
        "flaky": {"limits": [{"counter": "flaky", "window": "hour", "max": 1, "scope": "grant"}]}}}))
    server = pathlib.Path(__file__).with_name("erroring_server.py")
    proxy = subprocess.Popen(
        [str(CORRAL), "proxy", "--policy", str(policy), "--", sys.executable, str(server), str(calls)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(message):
        proxy.stdin.write(json.dumps(message) + "\n")
        proxy.stdin.flush()
        return json.loads(proxy.stdout.readline())

    tools = ask({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})["result"]["tools"]
    assert tools[0]["x-unknown"] == {"kept": True} and tools[0]["_meta"] == {"m": 1}
    # max 1 an hour, but each call fails at the server: its reservation is rolled back, so the next one is allowed
    for request_id in (2, 3, 4):
        answer = ask({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "flaky", "arguments": {}}})
        assert answer["error"]["message"] == "backend unavailable", answer
    assert len(calls.read_text().splitlines()) == 3
    proxy.stdin.close()
    assert proxy.wait(timeout=10) == 0


def approval_policy(path):
    path.write_text(json.dumps({
        "version": "1", "default": "deny",
        "tools": {
            "create_background_task": {},
            "append_task_event": {"action": "require_approval", "reason": "Events are visible to the whole team",
                                  "limits": [{"counter": "events", "window": "hour", "max": 5, "scope": "grant"}]},
        },
    }))


def test_approval_through_elicitation_accepted_declined_and_timed_out(state_dir, tmp_path):
    from mcp import types

    policy, audit, calls = tmp_path / "policy.json", tmp_path / "audit.jsonl", tmp_path / "calls.jsonl"
    approval_policy(policy)
    answers = ["accept", "decline", "slow"]
    asked = []

    async def on_elicit(context, params):
        asked.append(params.message)
        answer = answers.pop(0)
        if answer == "slow":
            await asyncio.sleep(3)  # longer than --approval-timeout
            answer = "accept"
        return types.ElicitResult(action=answer, content={} if answer == "accept" else None)

    async def scenario():
        args = ["proxy", "--policy", str(policy), "--audit", str(audit), "--approval-timeout", "1", "--",
                str(MOCK), "--state-dir", state_dir, "--call-log", str(calls)]
        params = StdioServerParameters(command=str(CORRAL), args=args)
        async with stdio_client(params) as streams:
            async with ClientSession(streams[0], streams[1], elicitation_callback=on_elicit) as session:
                await session.initialize()
                task = await call(session, "create_background_task",
                                  {"title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 30000}})
                event = {"task_id": task["task_id"], "message": "deploying"}
                accepted = await session.call_tool("append_task_event", event)
                assert not accepted.is_error and accepted.structured_content["message"] == "deploying"
                declined = await session.call_tool("append_task_event", event)
                assert declined.is_error and "was refused" in declined.content[0].text
                timed_out = await session.call_tool("append_task_event", event)
                assert timed_out.is_error and "not given within 1 s" in timed_out.content[0].text

    run(scenario())
    assert len(asked) == 3 and "append_task_event" in asked[0] and "visible to the whole team" in asked[0]
    # The mock executed the create and only the accepted event.
    executed = [json.loads(line)["tool"] for line in calls.read_text().splitlines()]
    assert executed == ["create_background_task", "append_task_event"]
    decisions = [(line["tool"], line["decision"]) for line in map(json.loads, audit.read_text().splitlines())]
    assert decisions == [("create_background_task", "allow"),
                         ("append_task_event", "approval_required"), ("append_task_event", "allow"),
                         ("append_task_event", "approval_required"), ("append_task_event", "deny"),
                         ("append_task_event", "approval_required"), ("append_task_event", "deny")]


def test_approval_without_elicitation_is_denied(state_dir, tmp_path):
    policy, calls = tmp_path / "policy.json", tmp_path / "calls.jsonl"
    approval_policy(policy)

    async def scenario():
        args = ["proxy", "--policy", str(policy), "--", str(MOCK), "--state-dir", state_dir, "--call-log", str(calls)]
        async with stdio_client(StdioServerParameters(command=str(CORRAL), args=args)) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                denied = await session.call_tool("append_task_event", {"task_id": "x", "message": "m"})
                assert denied.is_error
                assert "approval was required, but the client does not support elicitation" in denied.content[0].text

    run(scenario())
    assert not calls.exists() or calls.read_text() == ""


def proxy_over_http(*args):
    """corral proxy --http on a free loopback port; yields the endpoint URL."""
    return listening([str(CORRAL), "proxy", "--http", "127.0.0.1:0", *args], "corral proxy")


def test_proxy_over_streamable_http(state_dir, tmp_path):
    from mcp import types
    from mcp.client.streamable_http import streamable_http_client

    policy, audit, calls = tmp_path / "policy.json", tmp_path / "audit.jsonl", tmp_path / "calls.jsonl"
    write_policy(policy)
    document = json.loads(policy.read_text())
    document["tools"]["append_task_event"] = {"action": "require_approval"}
    policy.write_text(json.dumps(document))

    async def accept(context, params):
        return types.ElicitResult(action="accept", content={})

    async def scenario(url):
        async with streamable_http_client(url) as streams:
            async with ClientSession(streams[0], streams[1], elicitation_callback=accept) as session:
                await session.initialize()
                names = {tool.name for tool in (await session.list_tools()).tools}
                assert "cancel_background_task" not in names and "create_background_task" in names
                task = await call(session, "create_background_task",
                                  {"title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 30000}})
                hidden = await session.call_tool("cancel_background_task", {"task_id": task["task_id"]})
                assert hidden.is_error and "hidden by policy" in hidden.content[0].text
                denied = await session.call_tool("get_scheduler_time", {})
                assert denied.is_error and "not permitted by policy" in denied.content[0].text
                # Approval asked through elicitation on the session's GET stream, answered by POST.
                event = await call(session, "append_task_event", {"task_id": task["task_id"], "message": "over http"})
                assert event["message"] == "over http"
                status = await call(session, "get_background_task", {"task_id": task["task_id"]})
                assert status["runtime_status"] == "running"

    with proxy_over_http("--policy", str(policy), "--audit", str(audit), "--",
                         str(MOCK), "--state-dir", state_dir, "--call-log", str(calls)) as url:
        run(scenario(url))
    executed = [json.loads(line)["tool"] for line in calls.read_text().splitlines()]
    assert executed == ["create_background_task", "append_task_event", "get_background_task"]
    sessions = {line["session"] for line in map(json.loads, audit.read_text().splitlines())}
    assert len(sessions) == 1 and None not in sessions  # the MCP session id, recorded with each decision


def test_a_signal_to_the_proxy_takes_the_server_down(state_dir, tmp_path):
    import os
    import signal
    import time

    policy = tmp_path / "policy.json"
    write_policy(policy)
    proxy = subprocess.Popen([str(CORRAL), "proxy", "--policy", str(policy), "--", str(MOCK), "--state-dir", state_dir],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proxy.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}) + "\n")
    proxy.stdin.flush()
    assert json.loads(proxy.stdout.readline())["id"] == 0
    children = [int(pid) for task in os.listdir(f"/proc/{proxy.pid}/task")
                for pid in open(f"/proc/{proxy.pid}/task/{task}/children").read().split()]
    assert len(children) == 1
    server = children[0]
    proxy.send_signal(signal.SIGTERM)
    assert proxy.wait(timeout=15) == 0  # allcanuse-mock ends cleanly on SIGTERM, and the proxy exits with its status
    deadline = time.time() + 5
    while os.path.exists(f"/proc/{server}") and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{server}") or process_state(server) == "Z"


def test_unreadable_and_ambiguous_texts_are_refused_not_forwarded(state_dir, tmp_path):
    policy, calls = tmp_path / "policy.json", tmp_path / "calls.jsonl"
    write_policy(policy)
    proxy = subprocess.Popen([str(CORRAL), "proxy", "--policy", str(policy), "--", str(MOCK), "--state-dir", state_dir,
                              "--call-log", str(calls)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    hidden = '"name":"cancel_background_task","arguments":{"task_id":"x"}'
    lines = [
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{' + hidden + '},"method":"ping"}',
        '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{' + hidden + ',"name":"list_background_tasks"}}',
        '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{' + hidden.replace('"x"', "NaN") + '}}',
        '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{' + hidden + '},}',
        # What a server that matches keys regardless of case (Go's encoding/json) would read as the hidden call.
        '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"list_background_tasks","Name":"cancel_background_task"}}',
        '{"jsonrpc":"2.0","id":6,"Method":"tools/call","params":{' + hidden + '}}',
        '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_background_tasks","arguments":{"limit":1,"LIMIT":2}}}',
        # An id a JavaScript server would answer under another (rounded) id.
        '{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/list"}',
    ]
    for line in lines:
        proxy.stdin.write(line + "\n")
    proxy.stdin.flush()
    answers = [json.loads(proxy.stdout.readline()) for _ in lines]
    assert [answer["error"]["code"] for answer in answers] == [-32600, -32600, -32700, -32700, -32600, -32600, -32600, -32600]
    # Under their ids, so a client (or an HTTP POST) is not left waiting.
    assert [answer["id"] for answer in answers] == [1, 2, 3, 4, 5, 6, 7, 9007199254740993]
    assert all("refused by corral proxy" in answer["error"]["message"] for answer in answers)
    proxy.stdin.close()
    assert proxy.wait(timeout=20) == 0
    assert not calls.exists() or calls.read_text() == ""


def test_http_session_whose_server_dies_answers_instead_of_hanging(state_dir, tmp_path):
    import os
    import signal
    import time

    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow"}))

    async def scenario(url, proxy_pid):
        async with streamable_http_client(url) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                task = await call(session, "create_background_task",
                                  {"title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 30000}})
                waiting = asyncio.create_task(session.call_tool("wait_for_background_task",
                                                                {"task_id": task["task_id"], "timeout_ms": 20000}))
                await asyncio.sleep(0.5)
                servers = [int(pid) for thread in os.listdir(f"/proc/{proxy_pid}/task")
                           for pid in open(f"/proc/{proxy_pid}/task/{thread}/children").read().split()]
                assert len(servers) == 1
                os.kill(servers[0], signal.SIGKILL)
                started = time.monotonic()
                try:
                    await asyncio.wait_for(waiting, 10)
                    raise AssertionError("the wait must fail when its server is killed")
                except MCPError as error:
                    assert "killed by signal 9" in str(error)
                assert time.monotonic() - started < 5

    with proxy_over_http("--policy", str(policy), "--", str(MOCK), "--state-dir", state_dir) as url:
        proxy_pid = int(subprocess.check_output(["pgrep", "-f", f"corral proxy --http 127.0.0.1:0 --policy {policy}"]).split()[0])
        run(scenario(url, proxy_pid))


def test_http_proxy_sigterm_with_a_wait_in_flight_ends_promptly(state_dir, tmp_path):
    import re
    import signal
    import time

    from mcp.client.streamable_http import streamable_http_client

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow"}))
    proxy = subprocess.Popen([str(CORRAL), "proxy", "--http", "127.0.0.1:0", "--policy", str(policy), "--",
                              str(MOCK), "--state-dir", state_dir], stderr=subprocess.PIPE, text=True)
    try:
        url = next(re.search(r"listening on (http://\S+)", line).group(1)
                   for line in proxy.stderr if "corral proxy: listening on" in line)

        async def scenario():
            async with streamable_http_client(url) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    task = await call(session, "create_background_task", {
                        "title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 600000}})
                    waiting = asyncio.create_task(session.call_tool(
                        "wait_for_background_task", {"task_id": task["task_id"], "timeout_ms": -1}))
                    await asyncio.sleep(0.5)
                    proxy.send_signal(signal.SIGTERM)
                    started = time.monotonic()
                    result = await asyncio.wait_for(waiting, 10)  # answered: the server cancels its tasks at EOF
                    assert result.structured_content["last_result"]["status"] == "cancelled", result
                    assert time.monotonic() - started < 6

        run(scenario())
        assert proxy.wait(timeout=15) == 0
    finally:
        if proxy.poll() is None:
            proxy.kill()


def test_bad_invocations_are_explained(tmp_path):
    policy = tmp_path / "policy.json"
    write_policy(policy)
    cases = [
        (["proxy", "--policy", str(policy), "--http", "nonsense", "--", "cat"], "--http wants HOST:PORT"),
        (["proxy", "--policy", str(policy), "--audit", "/nonexistent-dir/a.jsonl", "--", "cat"], "--audit: cannot open"),
        (["proxy", "--policy", str(policy), "--approval-timeout", "0", "--", "cat"], "--approval-timeout must be"),
        (["proxy", "--policy", str(policy)], "no server command"),
        (["proxy", "--policy", str(policy), "--upstream-url", "http://127.0.0.1:1/mcp", "--", "cat"], "not both"),
        (["proxy", "--policy", str(policy), "--upstream-url", "ftp://x/mcp"], "--upstream-url wants an http:// or https:// URL"),
        (["proxy", "--policy", str(policy), "--grants", str(policy), "--", "cat"], "--grants needs --http"),
        (["proxy", "--policy", str(policy), "--metrics", "nowhere", "--", "cat"], "--metrics wants HOST:PORT"),
        (["proxy", "--policy", str(policy), "--http-request-timeout-ms=-5", "--", "cat"], "--http-request-timeout-ms must be at least 1"),
        (["proxy", "--policy", str(policy), "--http-max-connections", "0", "--", "cat"], "--http-max-connections must be at least 1"),
        (["proxy", "--policy", str(tmp_path / "missing.json"), "--", "cat"], "missing.json"),
    ]
    for args, message in cases:
        done = subprocess.run([str(CORRAL), *args], capture_output=True, text=True, timeout=20)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)


def test_the_server_starts_with_sigpipe_at_its_default_and_a_closed_client_is_no_signal(state_dir, tmp_path):
    """corral proxy ignores SIGPIPE itself (its writes then need no per-write mask), but the server it runs must not
    inherit that: it starts with SIGPIPE at its default. And a client that closes its end of the proxy's stdout is
    an EPIPE to the proxy: it goes on passing the client's calls to the server, and ends with the server's 0."""
    policy, audit = tmp_path / "policy.json", tmp_path / "audit.jsonl"
    policy.write_text(json.dumps({"version": "1", "default": "allow"}))
    dispositions = tmp_path / "server-sigign"
    server = ["/bin/sh", "-c", f'grep SigIgn /proc/self/status > {dispositions}; exec "$0" "$@"',
              str(MOCK), "--state-dir", state_dir, "--grace-ms", "300"]
    proxy = subprocess.Popen([str(CORRAL), "proxy", "--policy", str(policy), "--audit", str(audit), "--", *server],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        write_modern(proxy.stdin, 1, "server/discover")
        assert json.loads(proxy.stdout.readline())["id"] == 1
        ignored = int(dispositions.read_text().split()[1], 16)
        assert ignored & (1 << (13 - 1)) == 0, f"the server started with SIGPIPE ignored (SigIgn {ignored:x})"
        printed = stop_reading_then_create(proxy, state_dir, "proxied-after-close")
        assert proxy.poll() is None, f"the proxy ended with {proxy.returncode} after its client stopped reading"
        assert printed, "a call sent after the client stopped reading did not reach the server"
    finally:
        proxy.stdin.close()
        code = proxy.wait(timeout=30)
    assert code == 0, f"the proxy ended with {code} (-13 is SIGPIPE)"



class _HeldAnswers:
    """An HTTP MCP server of both eras (2026-07-28 stateless, 2025-11-25 in a session) whose `slow` tool answers only
    once `release` is set: as JSON, or as an event stream (`slow_sse`) whose headers go at once; `fast` answers at
    once. Each answer's text is the tool's name."""

    def __init__(self, refuse_notifications=False):
        import http.server
        import threading

        self.release = threading.Event()
        self.held = threading.Semaphore(0)  # one release per call that is being held
        release, held = self.release, self.held

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, body, result, stream=False, session=None):
                data = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
                self.send_response(200)
                if session:
                    self.send_header("Mcp-Session-Id", session)
                if stream:
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.flush()
                    held.release()
                    release.wait(20)
                    self.wfile.write(b"data: " + data + b"\n\n")
                    self.close_connection = True
                    return
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "id" not in body:
                    self.send_response(500 if refuse_notifications else 202)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                info = {"name": "held", "version": "1"}
                if body["method"] == "server/discover":
                    return self.answer(body, {"resultType": "complete", "supportedVersions": ["2026-07-28", "2025-11-25"],
                                              "capabilities": {"tools": {}}, "serverInfo": info,
                                              "_meta": {"io.modelcontextprotocol/serverInfo": info}})
                if body["method"] == "initialize":
                    return self.answer(body, {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                              "serverInfo": info}, session="held-session")
                if body["method"] == "tools/list":
                    tools = [{"name": name, "inputSchema": {"type": "object"}} for name in ("slow", "slow_sse", "fast")]
                    return self.answer(body, {"resultType": "complete", "tools": tools, "ttlMs": 0, "cacheScope": "private"})
                name = body["params"]["name"]
                if name == "slow":
                    held.release()
                    release.wait(20)
                result = {"resultType": "complete", "content": [{"type": "text", "text": name}], "isError": False}
                self.answer(body, result, stream=name == "slow_sse")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/mcp"

    def close(self):
        self.release.set()
        self.server.shutdown()


def _stdio_proxy_to(url, tmp_path, stderr=subprocess.DEVNULL):
    """`corral proxy` (allow all) over stdio in front of `url`, and a queue of its answers as they come."""
    import queue
    import threading

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow"}))
    proxy = subprocess.Popen([str(CORRAL), "proxy", "--policy", str(policy), "--upstream-url", url],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
    answers = queue.Queue()
    threading.Thread(target=lambda: [answers.put(json.loads(line)) for line in proxy.stdout], daemon=True).start()
    return proxy, answers


@contextlib.contextmanager
def _proxied(server, tmp_path, stderr=subprocess.DEVNULL):
    """`_stdio_proxy_to(server.url)`; at the end the server stops and the proxy's input closes."""
    proxy, answers = _stdio_proxy_to(server.url, tmp_path, stderr=stderr)
    try:
        yield proxy, answers
    finally:
        server.close()
        proxy.stdin.close()
        proxy.wait(timeout=15)


def _answered(answers, request_id, text):
    """The next answer is `request_id`'s, a result whose text is `text`."""
    answer = answers.get(timeout=10)
    assert answer["id"] == request_id and answer["result"]["content"][0]["text"] == text, answer


def _call(proxy, request_id, name):
    from raw_client import modern_request

    proxy.stdin.write(json.dumps(modern_request(request_id, "tools/call", {"name": name, "arguments": {}})) + "\n")
    proxy.stdin.flush()


def test_a_slow_json_answer_from_an_http_server_does_not_hold_up_the_next_call(tmp_path):
    """A stdio client in front of an HTTP server that holds a call's JSON answer (as a server may for a long wait):
    the client's next call goes out and is answered meanwhile, and the slow one is answered when it is ready."""
    server = _HeldAnswers()
    with _proxied(server, tmp_path) as (proxy, answers):
        _call(proxy, 1, "slow")
        _call(proxy, 2, "fast")
        _answered(answers, 2, "fast")
        server.release.set()
        _answered(answers, 1, "slow")


@pytest.mark.parametrize("mode", ["2026-07-28", "legacy"])
def test_the_sdk_gets_a_fast_answer_while_an_http_server_holds_a_slow_one(tmp_path, mode):
    """The Python SDK (each era) through corral proxy over stdio to an HTTP server: a call made while another's
    JSON answer is held is answered first, in a 2025-11-25 session as well as statelessly."""
    import asyncio

    from mcp import Client, StdioServerParameters

    server = _HeldAnswers()
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow"}))
    params = StdioServerParameters(command=str(CORRAL), args=["proxy", "--policy", str(policy), "--upstream-url", server.url])

    async def scenario():
        async with Client(params, mode=mode) as client:
            assert client.protocol_version == ("2026-07-28" if mode == "2026-07-28" else "2025-11-25")
            slow = asyncio.create_task(client.call_tool("slow", {}))
            assert await asyncio.to_thread(server.held.acquire, True, 10), "the slow call reached the server"
            fast = await asyncio.wait_for(client.call_tool("fast", {}), 10)
            assert fast.content[0].text == "fast" and not slow.done()
            server.release.set()
            assert (await asyncio.wait_for(slow, 10)).content[0].text == "slow"

    try:
        run(scenario())
    finally:
        server.close()


def test_answers_an_http_server_still_owes_come_after_the_clients_input_ends(tmp_path):
    """The client sends its calls and closes its input at once (`echo … | corral proxy`): the proxy still reads the
    answers the server owes, a JSON one and one on an event stream that opened before the input ended, then exits."""
    import time

    server = _HeldAnswers()
    proxy, answers = _stdio_proxy_to(server.url, tmp_path)
    try:
        _call(proxy, 1, "slow")
        _call(proxy, 2, "slow_sse")
        proxy.stdin.close()
        assert server.held.acquire(timeout=10) and server.held.acquire(timeout=10), "both calls reached the server"
        time.sleep(0.5)  # the proxy has seen its input end meanwhile
        server.release.set()
        received = {answer["id"]: answer["result"]["content"][0]["text"] for answer in (answers.get(timeout=10), answers.get(timeout=10))}
        assert received == {1: "slow", 2: "slow_sse"}, received
        assert proxy.wait(timeout=15) == 0
    finally:
        server.close()
        if proxy.poll() is None:
            proxy.kill()


def test_a_cancelled_call_or_a_signal_does_not_keep_the_proxy_waiting_for_an_http_server(tmp_path):
    """At the end of input the proxy waits only for answers a server still owes: not for a call the client cancelled
    (a server should not answer it), and not past SIGTERM, which ends the connection (an HTTP server is not the
    proxy's to signal)."""
    import signal
    import time

    for ending in ("cancel", "sigterm"):
        server = _HeldAnswers()
        proxy, answers = _stdio_proxy_to(server.url, tmp_path)
        try:
            _call(proxy, 1, "slow")
            assert server.held.acquire(timeout=10), "the call reached the server"
            if ending == "cancel":
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
                proxy.stdin.write(json.dumps(cancel) + "\n")
                proxy.stdin.flush()
            proxy.stdin.close()
            if ending == "sigterm":
                time.sleep(0.5)  # waiting for the held answer by now
                proxy.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert proxy.wait(timeout=10) == 0, ending
            assert time.monotonic() - started < 5, ending
        finally:
            server.close()
            if proxy.poll() is None:
                proxy.kill()


def test_a_notification_an_http_server_refuses_is_said_on_stderr(tmp_path):
    """A notification (here a cancellation) has no answer that could carry its failure: the proxy says on stderr that
    it could not be delivered, and goes on serving calls."""
    server = _HeldAnswers(refuse_notifications=True)
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr, _proxied(server, tmp_path, stderr=stderr) as (proxy, answers):
        proxy.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                      "params": {"requestId": 7, "reason": "changed my mind"}}) + "\n")
        _call(proxy, 1, "fast")
        _answered(answers, 1, "fast")
    text = stderr_path.read_text()
    assert f"notifications/cancelled could not be delivered to the MCP server at {server.url}" in text, text
