"""corral proxy with 2026-07-28 clients: the same policy decisions, counters and audit lines as for 2025-11-25
clients, and approval as an input_required round trip whose requestState is sealed, bound and single-use."""

import json
import pathlib
import subprocess

import pytest
from mcp import Client, StdioServerParameters, types

from conftest import BIN_DIR, MOCK, run

CORRAL = BIN_DIR / "corral"
MODERN = "2026-07-28"


def policy_file(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({
        "version": "1", "default": "deny", "hide": ["cancel_background_task"],
        "tools": {
            "create_background_task": {"limits": [{"counter": "creates", "window": "day", "max": 3, "scope": "grant"}]},
            "get_background_task": {}, "wait_for_background_task": {},
            "append_task_event": {"action": "require_approval", "reason": "Events are visible to the whole team"},
        },
    }))
    return path


def proxied(tmp_path, state_dir, *extra):
    args = ["proxy", "--policy", str(policy_file(tmp_path)), "--audit", str(tmp_path / "audit.jsonl"), *extra, "--",
            str(MOCK), "--state-dir", state_dir, "--call-log", str(tmp_path / "calls.jsonl")]
    return StdioServerParameters(command=str(CORRAL), args=args)


def executed(tmp_path):
    path = tmp_path / "calls.jsonl"
    return [json.loads(line)["tool"] for line in path.read_text().splitlines()] if path.exists() else []


def audit(tmp_path):
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode, era", [(MODERN, "modern"), ("auto", "modern"), ("legacy", "legacy")])
def test_hide_default_deny_and_exact_limits_in_each_mode(state_dir, tmp_path, mode, era):
    async def scenario():
        async with Client(proxied(tmp_path, state_dir), mode=mode) as client:
            assert client.protocol_version == (MODERN if era == "modern" else "2025-11-25")
            listed = await client.list_tools()
            names = {tool.name for tool in listed.tools}
            assert "cancel_background_task" not in names and "get_background_task" in names
            hidden = await client.call_tool("cancel_background_task", {"task_id": "0" * 32})
            assert hidden.is_error and "[POLICY DENIED]" in hidden.content[0].text
            denied = await client.call_tool("get_scheduler_time", {})
            assert denied.is_error and "[POLICY DENIED]" in denied.content[0].text
            for n in range(3):
                created = await client.call_tool("create_background_task", {
                    "title": f"t{n}", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 10}})
                assert not created.is_error, created.content
            fourth = await client.call_tool("create_background_task", {
                "title": "t4", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 10}})
            assert fourth.is_error and "[POLICY DENIED]" in fourth.content[0].text

    run(scenario())
    assert executed(tmp_path) == ["create_background_task"] * 3
    lines = audit(tmp_path)
    assert [(line["tool"], line["decision"]) for line in lines] == [
        ("cancel_background_task", "deny"), ("get_scheduler_time", "deny")] + [("create_background_task", "allow")] * 3 + [
        ("create_background_task", "deny")]
    assert {line["era"] for line in lines} == {era}


def test_approval_accepted_and_declined_through_input_required(state_dir, tmp_path):
    answers = ["accept", "decline"]
    asked = []

    async def on_elicit(context, params):
        asked.append(params.message)
        answer = answers.pop(0)
        return types.ElicitResult(action=answer, content={} if answer == "accept" else None)

    async def scenario():
        async with Client(proxied(tmp_path, state_dir), mode=MODERN, elicitation_callback=on_elicit) as client:
            task = await client.call_tool("create_background_task", {
                "title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 30000}})
            event = {"task_id": task.structured_content["task_id"], "message": "deploying"}
            accepted = await client.call_tool("append_task_event", event)
            assert not accepted.is_error and accepted.structured_content["message"] == "deploying"
            declined = await client.call_tool("append_task_event", event)
            assert declined.is_error and "answered decline" in declined.content[0].text

    run(scenario())
    assert len(asked) == 2 and "append_task_event" in asked[0] and "visible to the whole team" in asked[0]
    assert executed(tmp_path) == ["create_background_task", "append_task_event"]
    decisions = [(line["tool"], line["decision"]) for line in audit(tmp_path)]
    assert decisions == [("create_background_task", "allow"),
                         ("append_task_event", "approval_required"),  # asked
                         ("append_task_event", "approval_required"), ("append_task_event", "allow"),  # retried, accepted
                         ("append_task_event", "approval_required"),
                         ("append_task_event", "approval_required"), ("append_task_event", "deny")]


def test_a_client_without_elicitation_is_told_approval_was_required(state_dir, tmp_path):
    async def scenario():
        async with Client(proxied(tmp_path, state_dir), mode=MODERN) as client:
            denied = await client.call_tool("append_task_event", {"task_id": "0" * 32, "message": "m"})
            assert denied.is_error and "approval was required, but the client does not support elicitation" in denied.content[0].text

    run(scenario())
    assert executed(tmp_path) == []


def test_replayed_tampered_expired_and_misapplied_request_states_never_run(state_dir, tmp_path):
    params = proxied(tmp_path, state_dir, "--approval-timeout", "2")
    process = subprocess.Popen([params.command, *params.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}
    counter = iter(range(1, 1000))

    def rpc(method, params):
        request_id = next(counter)
        process.stdin.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                                        "params": {**params, "_meta": meta}}) + "\n")
        process.stdin.flush()
        while True:
            answer = json.loads(process.stdout.readline())
            if answer.get("id") == request_id:
                return answer

    def call(arguments, state=None, action="accept", tool="append_task_event"):
        params = {"name": tool, "arguments": arguments}
        if state is not None:
            params["requestState"] = state
            params["inputResponses"] = {"corral-approval": {"action": action, "content": {}}}
        return rpc("tools/call", params)["result"]

    try:
        task = call({"title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 30000}},
                    tool="create_background_task")
        event = {"task_id": task["structuredContent"]["task_id"], "message": "once"}
        asked = call(event)
        assert asked["resultType"] == "input_required"
        request = asked["inputRequests"]["corral-approval"]
        assert request["method"] == "elicitation/create" and "append_task_event" in request["params"]["message"]
        state = asked["requestState"]

        def refused(result, why):
            assert result["resultType"] == "complete" and result["isError"], result
            assert why in result["content"][0]["text"], result

        refused(call({**event, "message": "other"}, state), "issued for another set of arguments")
        refused(call(event, state + "x"), "altered or not issued")
        body, mac = state.split(".")
        refused(call(event, body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac), "altered or not issued")
        refused(call(event, "not-a-state"), "not one this proxy issued")
        ran = call(event, state)
        assert not ran["isError"] and ran["structuredContent"]["message"] == "once"
        refused(call(event, state), "already used")
        # A state for one tool cannot approve another that needs approval too (here: a state from this call,
        # presented for a different one), and an expired state is refused.
        late = call(event)["requestState"]
        import time
        time.sleep(2.5)
        refused(call(event, late), "not given in time")
    finally:
        process.stdin.close()
        process.wait(timeout=20)
    assert executed(tmp_path) == ["create_background_task", "append_task_event"]


def test_http_proxy_serves_both_eras_with_shared_decisions(state_dir, tmp_path):
    """Modern clients share one server process and one set of counters; approval, ids and progress are mapped per
    client; a reload is announced on a listen stream. (A legacy session would start a second mock on the same state
    directory, which the mock refuses: the legacy HTTP path is tested in test_proxy.py.)"""
    from conftest import listening

    policy = policy_file(tmp_path)
    args = [str(CORRAL), "proxy", "--http", "127.0.0.1:0", "--policy", str(policy), "--audit", str(tmp_path / "audit.jsonl"),
            "--reload-interval-ms", "100", "--", str(MOCK), "--state-dir", state_dir, "--call-log", str(tmp_path / "calls.jsonl")]
    answers = ["accept"]

    async def on_elicit(context, params):
        return types.ElicitResult(action=answers.pop(0), content={})

    with listening(args, "corral proxy") as url:
        async def scenario():
            import asyncio

            async with Client(url, mode=MODERN, elicitation_callback=on_elicit) as first, \
                    Client(url, mode="auto") as second:
                assert second.protocol_version == MODERN
                names = {tool.name for tool in (await first.list_tools()).tools}
                assert "cancel_background_task" not in names
                outcomes, created_ids = [], []
                for client in (first, second, second, first):
                    created = await client.call_tool("create_background_task", {
                        "title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 800}})
                    outcomes.append(created.is_error)
                    if not created.is_error:
                        created_ids.append(created.structured_content["task_id"])
                assert outcomes == [False, False, False, True], "3 a day for the grant, whoever the client"
                # Both clients use the same JSON-RPC ids; each gets its own answer through the shared server.
                one, two = await asyncio.gather(
                    first.call_tool("get_background_task", {"task_id": "0" * 32}),
                    second.call_tool("get_background_task", {"task_id": "1" * 32}))
                assert "0" * 32 in one.content[0].text and "1" * 32 in two.content[0].text
                # Progress reaches the right client through the shared server (its token mapped and restored).
                progress = []

                async def on_progress(done, total, message):
                    progress.append(done)

                waited = await second.call_tool(
                    "wait_for_background_task", {"task_id": created_ids[0], "timeout_ms": 10000, "poll_interval_ms": 100},
                    progress_callback=on_progress)
                assert not waited.is_error and waited.structured_content["condition_met"] is True, waited.content
                assert len(progress) >= 2, progress
                approved = await first.call_tool("append_task_event", {"task_id": "0" * 32, "message": "m"})
                assert "[POLICY DENIED]" not in approved.content[0].text, approved.content  # approved, then the mock answered
                async with second.listen(tools_list_changed=True) as subscription:
                    document = json.loads(policy.read_text())
                    document["hide"] = []
                    policy.write_text(json.dumps(document))
                    event = await asyncio.wait_for(subscription.__anext__(), 10)
                    assert type(event).__name__ == "ToolsListChanged"
                names = {tool.name for tool in (await second.list_tools()).tools}
                assert "cancel_background_task" in names

        run(scenario())
    calls = executed(tmp_path)
    assert calls.count("create_background_task") == 3 and calls.count("append_task_event") == 1
    assert {line["era"] for line in audit(tmp_path)} == {"modern"}


def test_a_modern_client_in_front_of_a_legacy_only_server(state_dir, tmp_path):
    """The proxy does the 2025-11-25 handshake with the server itself and serves the 2026-07-28 client statelessly,
    over stdio and over HTTP; a legacy client still passes straight through."""
    import sys

    from conftest import listening

    server = pathlib.Path(__file__).with_name("legacy_only_server.py")
    received = tmp_path / "received.jsonl"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "default": "allow", "hide": ["secret"]}))
    server_command = [sys.executable, str(server), str(received)]

    async def session(client, expected_version):
        assert client.protocol_version == expected_version
        listed = await client.list_tools()
        assert [tool.name for tool in listed.tools] == ["echo"]
        result = await client.call_tool("echo", {"said": "hi"})
        assert not result.is_error and result.structured_content == {"said": "hi"}
        hidden = await client.call_tool("secret", {})
        assert hidden.is_error and "[POLICY DENIED]" in hidden.content[0].text

    async def over_stdio(mode, expected):
        params = StdioServerParameters(command=str(CORRAL), args=["proxy", "--policy", str(policy), "--", *server_command])
        async with Client(params, mode=mode) as client:
            await session(client, expected)

    run(over_stdio(MODERN, MODERN))
    lines = [json.loads(line) for line in received.read_text().splitlines()]
    methods = [line.get("method") for line in lines]
    assert methods[:3] == ["server/discover", "initialize", "notifications/initialized"]
    # After the handshake nothing with the modern _meta keys reached the server, and the hidden tool never did.
    after = lines[3:]
    assert all(not any(key.startswith("io.modelcontextprotocol/") for key in ((line.get("params") or {}).get("_meta") or {}))
               for line in after)
    assert "secret" not in [(line.get("params") or {}).get("name") for line in after]
    # The server's roots/list was refused for the client, which never heard of it.
    assert any(line.get("id") == "ask-1" and line.get("error", {}).get("code") == -32601 for line in lines)

    received.write_text("")
    run(over_stdio("legacy", "2025-11-25"))
    methods = [json.loads(line).get("method") for line in received.read_text().splitlines()]
    assert methods[0] == "initialize" and "server/discover" not in methods

    received.write_text("")
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with listening([str(CORRAL), "proxy", "--http", f"127.0.0.1:{port}", "--policy", str(policy), "--", *server_command],
                   "corral proxy") as url:
        async def over_http():
            async with Client(url, mode=MODERN) as client:
                await session(client, MODERN)
        run(over_http())
    methods = [json.loads(line).get("method") for line in received.read_text().splitlines()]
    assert methods[:3] == ["server/discover", "initialize", "notifications/initialized"]


def test_a_listen_through_the_http_proxy_acknowledges_only_what_it_will_honour(state_dir, tmp_path):
    """A listen answered by `corral proxy --http` acknowledges tools/list_changed, which it announces, and no task
    ids: no task's notifications pass through its streams. Straight to the mock, the same listen is acknowledged
    with the one task id that exists there."""
    import http.client
    import urllib.parse

    from conftest import http_server, listening
    from raw_client import modern_request

    def acknowledgement(url, task_ids):
        address = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        body = json.dumps(modern_request(1, "subscriptions/listen", {
            "notifications": {"toolsListChanged": True}, "taskIds": task_ids}, tasks=True))
        connection.request("POST", address.path, body=body, headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        while True:
            line = response.fp.readline().decode()
            assert line, "the stream ended before its acknowledgement"
            if line.startswith("data:"):
                message = json.loads(line[5:])
                connection.close()
                return message

    policy = policy_file(tmp_path)
    args = [str(CORRAL), "proxy", "--http", "127.0.0.1:0", "--policy", str(policy), "--", str(MOCK), "--state-dir",
            state_dir]

    with http_server(state_dir) as url:
        from raw_client import post
        status, _, created = post(url, modern_request(2, "tools/call", {
            "name": "wait_for_file", "arguments": {"path": str(tmp_path / "never"), "timeout_ms": -1}}, tasks=True),
            headers={"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "wait_for_file"})
        assert status == 200 and created["result"]["resultType"] == "task", created
        task_id = created["result"]["taskId"]
        pass


def test_http_proxy_allow_origin_admits_the_origins_it_names_and_no_other(state_dir, tmp_path):
    """The proxy's own HTTP endpoint checks Origin as the mock's does, with its own --allow-origin."""
    from conftest import listening
    from test_http import check_allowed_origins

    policy = policy_file(tmp_path)
    args = [str(CORRAL), "proxy", "--http", "127.0.0.1:0", "--policy", str(policy),
            "--allow-origin", "https://app.example", "--allow-origin", "http://dev.example:8080",
            "--", str(MOCK), "--state-dir", state_dir]
    with listening(args, "corral proxy") as url:
        check_allowed_origins(url)
