"""MCP's Tasks extension (io.modelcontextprotocol/tasks) over the mock's real processes: raw JSON-RPC over stdio,
Streamable HTTP, and the Python SDK 2.3.0's generic extension API."""

import json
import os
import signal
import subprocess
import time
import urllib.request
from typing import Literal

import anyio
import pytest

from conftest import MOCK, http_server
from raw_client import MODERN, TASKS, RawStdio, meta
from test_waits import watched  # noqa: F401  (fixture)


def command_task(client, argv=("/bin/sleep", "30")):
    return client.call("create_background_task", {"title": "t", "goal": "g", "task_type": "command",
                                                  "condition": {"argv": list(argv)}})["structuredContent"]


def get(client, task_id, tasks=True):
    return client.request("tasks/get", {"taskId": task_id}, tasks=tasks)


def settle(client, task_id, statuses, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        task = get(client, task_id)["result"]
        if task["status"] in statuses:
            return task
        assert time.monotonic() < deadline, f"task {task_id} stayed {task['status']}"
        time.sleep(0.02)


def test_discover_advertises_the_extension_and_blocking_tools_become_tasks(state_dir, watched):
    with RawStdio(state_dir) as client:
        discovered = client.request("server/discover", tasks=True)["result"]
        assert TASKS in discovered["capabilities"]["extensions"]
        # Without the declaration, the same call blocks exactly as before.
        blocking = client.call("wait_for_file", {"path": "/etc/hostname"})
        assert blocking["resultType"] == "complete" and blocking["structuredContent"]["ok"] is True
        created = client.call("wait_for_file", {"path": str(watched / "f"), "timeout_ms": 10000}, tasks=True)
        assert created["resultType"] == "task" and created["status"] == "working"
        for field in ("taskId", "createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs"):
            assert field in created, field
        # Durably created before the answer: tasks/get knows it at once.
        got = get(client, created["taskId"])["result"]
        assert got["resultType"] == "complete" and got["status"] == "working" and "result" not in got
        (watched / "f").write_text("here")
        done = settle(client, created["taskId"], {"completed"})
        assert done["result"]["isError"] is False
        assert done["result"]["structuredContent"]["ok"] is True
        assert done["result"]["structuredContent"]["last_result"]["exists"] is True
        # A tool that does not block never becomes a task.
        assert client.call("get_scheduler_time", tasks=True)["resultType"] == "complete"


def test_completed_inlines_an_error_result_and_the_rules_for_unknown_and_undeclared(state_dir):
    with RawStdio(state_dir) as client:
        failing = client.call("wait_for_background_task", {"task_id": "0" * 32}, tasks=True)
        done = settle(client, failing["taskId"], {"completed", "failed"})
        assert done["status"] == "completed" and done["result"]["isError"] is True
        background = command_task(client, ("/bin/true",))
        for unknown in ("nope", background["task_id"]):
            answer = get(client, unknown)
            assert answer["error"]["code"] == -32602, answer
        for method in ("tasks/get", "tasks/cancel", "tasks/update"):
            answer = client.request(method, {"taskId": failing["taskId"], "inputResponses": {}}, tasks=False)
            assert answer["error"]["code"] == -32021
            assert answer["error"]["data"]["requiredCapabilities"] == {"extensions": {TASKS: {}}}
        for method in ("tasks/list", "tasks/result"):
            assert client.request(method, {"taskId": failing["taskId"]}, tasks=True)["error"]["code"] == -32601
        listen = client.request("subscriptions/listen", {"notifications": {"taskIds": [failing["taskId"]]}})
        assert listen["error"]["code"] == -32021


def test_cancel_kills_a_watcher_and_never_touches_the_waited_task(state_dir, watched):
    with RawStdio(state_dir) as client:
        watcher = client.call("wait_for_file", {"path": str(watched / "never"), "timeout_ms": -1}, tasks=True)
        time.sleep(0.3)
        before = watcher_pids(client.process.pid)
        assert len(before) == 1
        ack = client.request("tasks/cancel", {"taskId": watcher["taskId"]}, tasks=True)
        assert ack["result"]["resultType"] == "complete"
        assert settle(client, watcher["taskId"], {"cancelled"})["status"] == "cancelled"
        deadline = time.monotonic() + 5
        while watcher_pids(client.process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watcher_pids(client.process.pid) == []
        # Cancelling a terminal task acks too, and changes nothing.
        assert client.request("tasks/cancel", {"taskId": watcher["taskId"]}, tasks=True)["result"]["resultType"] == "complete"
        assert get(client, watcher["taskId"])["result"]["status"] == "cancelled"

        background = command_task(client)
        waiting = client.call("wait_for_background_task", {"task_id": background["task_id"], "timeout_ms": -1}, tasks=True)
        client.request("tasks/cancel", {"taskId": waiting["taskId"]}, tasks=True)
        assert settle(client, waiting["taskId"], {"cancelled"})["status"] == "cancelled"
        still = client.call("get_background_task", {"task_id": background["task_id"]})["structuredContent"]
        assert still["status"] == "running" and os.path.exists(f"/proc/{still['pid']}")
        # notifications/cancelled never cancels a task.
        waiting = client.call("wait_for_background_task", {"task_id": background["task_id"], "timeout_ms": -1}, tasks=True)
        client.cancel(client.next_id - 1)
        time.sleep(0.2)
        assert get(client, waiting["taskId"])["result"]["status"] == "working"
        client.call("cancel_background_task", {"task_id": background["task_id"]})
        done = settle(client, waiting["taskId"], {"completed"})
        assert done["result"]["structuredContent"]["last_result"]["status"] == "cancelled"


def watcher_pids(server_pid):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if open(f"/proc/{entry}/comm").read().strip() == "allcanuse-watch":
                found.append(int(entry))
        except OSError:
            pass
    return found


def call_eliciting(client, tool, arguments):
    """A task-capable tools/call from a client that also declares elicitation."""
    capabilities = {"extensions": {"io.modelcontextprotocol/tasks": {}}, "elicitation": {}}
    answer = client.request("tools/call", {"name": tool, "arguments": arguments,
                                           "_meta": {"io.modelcontextprotocol/clientCapabilities": capabilities}})
    assert "result" in answer, answer
    return answer["result"]


def test_a_question_becomes_input_required_and_the_answer_goes_to_the_task(state_dir):
    with RawStdio(state_dir) as client:
        background = command_task(client)
        waiting = call_eliciting(client, "wait_for_background_task", {"task_id": background["task_id"], "timeout_ms": -1})
        client.call("mark_task_waiting_for_user", {"task_id": background["task_id"], "question": "which branch?"})
        asked = settle(client, waiting["taskId"], {"input_required"})
        (key, request), = asked["inputRequests"].items()
        assert request["method"] == "elicitation/create" and request["params"]["message"] == "which branch?"
        # An accepted answer that does not fit the schema asked for is refused, and the question stays open.
        for content in ("notanobject", {"reply": "main"}, {"answer": 5}, None):
            refused = client.request("tasks/update", {"taskId": waiting["taskId"],
                                                      "inputResponses": {key: {"action": "accept", "content": content}}},
                                     tasks=True)
            assert refused["error"]["code"] == -32602, (content, refused)
        assert get(client, waiting["taskId"])["result"]["status"] == "input_required"
        ack = client.request("tasks/update", {"taskId": waiting["taskId"],
                                              "inputResponses": {key: {"action": "accept", "content": {"answer": "main"}}}},
                             tasks=True)
        assert ack["result"]["resultType"] == "complete"
        assert settle(client, waiting["taskId"], {"working"})["status"] == "working"
        task = client.call("get_background_task", {"task_id": background["task_id"]})["structuredContent"]
        assert task["status"] == "running"
        events = client.call("list_task_events", {"task_id": background["task_id"]})["structuredContent"]["events"]
        decision = [event for event in events if event["type"] == "decision"][-1]
        assert decision["data"]["answer"] == {"answer": "main"} and decision["data"]["question"] == "which branch?"
        # A second question gets a new key; a decline is recorded too.
        client.call("mark_task_waiting_for_user", {"task_id": background["task_id"], "question": "sure?"})
        asked = settle(client, waiting["taskId"], {"input_required"})
        (second, _), = asked["inputRequests"].items()
        assert second != key
        # An answer to a key that is not outstanding is ignored.
        client.request("tasks/update", {"taskId": waiting["taskId"],
                                        "inputResponses": {key: {"action": "accept", "content": {"answer": "x"}}}},
                       tasks=True)
        assert get(client, waiting["taskId"])["result"]["status"] == "input_required"
        client.request("tasks/update", {"taskId": waiting["taskId"], "inputResponses": {second: {"action": "decline"}}},
                       tasks=True)
        assert settle(client, waiting["taskId"], {"working"})["status"] == "working"
        events = client.call("list_task_events", {"task_id": background["task_id"]})["structuredContent"]["events"]
        assert [event["data"]["action"] for event in events if event["type"] == "decision"] == ["accept", "decline"]
        client.call("cancel_background_task", {"task_id": background["task_id"]})
        assert settle(client, waiting["taskId"], {"completed"})["status"] == "completed"


def test_handles_survive_kill_9_and_expire_after_their_ttl(state_dir, watched):
    client = RawStdio(state_dir, "--mcp-task-ttl-ms", "1500")
    done = client.call("wait", {"duration_ms": 1}, tasks=True)
    settle(client, done["taskId"], {"completed"})
    working = client.call("wait_for_file", {"path": str(watched / "never"), "timeout_ms": -1}, tasks=True)
    client.process.send_signal(signal.SIGKILL)
    client.process.wait()
    with RawStdio(state_dir, "--mcp-task-ttl-ms", "1500") as again:
        assert get(again, done["taskId"])["result"]["status"] == "completed"
        stopped = get(again, working["taskId"])["result"]
        assert stopped["status"] == "failed" and "server stopped" in stopped["error"]["message"]
        time.sleep(1.6)
        assert get(again, done["taskId"])["error"]["code"] == -32602


def test_notifications_tasks_on_a_listen_stream(state_dir, watched):
    with RawStdio(state_dir) as client:
        created = client.call("wait_for_file", {"path": str(watched / "n"), "timeout_ms": -1}, tasks=True)
        # `taskIds` beside `notifications`, as the revision has it (inside it is accepted too: see above). The
        # acknowledgement is the subset the server will honour: not a task id it has never given out.
        unknown = "0" * 32
        listen_id = client.start("subscriptions/listen", {"notifications": {}, "taskIds": [unknown, created["taskId"]]},
                                 tasks=True)
        acknowledged = client.notifications.get(timeout=10)
        assert acknowledged["method"] == "notifications/subscriptions/acknowledged"
        assert acknowledged["params"]["taskIds"] == [created["taskId"]]
        (watched / "n").write_text("x")
        while True:
            message = client.notifications.get(timeout=10)
            if message["method"] == "notifications/tasks":
                break
        assert message["params"]["taskId"] == created["taskId"] and message["params"]["status"] == "completed"
        assert message["params"]["result"]["structuredContent"]["ok"] is True
        assert message["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen_id


def test_tasks_over_http_carry_the_name_header(state_dir, watched):
    with http_server(state_dir) as url:
        def post(body, name=None):
            headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                       "MCP-Protocol-Version": MODERN, "Mcp-Method": body["method"]}
            if name:
                headers["Mcp-Name"] = name
            request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        status, created = post({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "wait_for_file", "arguments": {"path": str(watched / "h"), "timeout_ms": -1}, "_meta": meta(True)}},
            name="wait_for_file")
        assert status == 200 and created["result"]["resultType"] == "task"
        task_id = created["result"]["taskId"]
        status, got = post({"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"taskId": task_id, "_meta": meta(True)}},
                           name=task_id)
        assert status == 200 and got["result"]["status"] == "working"
        status, mismatch = post({"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"taskId": task_id, "_meta": meta(True)}},
                                name="another")
        assert status == 400 and mismatch["error"]["code"] == -32020
        status, _ = post({"jsonrpc": "2.0", "id": 4, "method": "tasks/cancel", "params": {"taskId": task_id, "_meta": meta(True)}},
                         name=task_id)
        assert status == 200


def test_the_python_sdk_drives_a_task_through_its_extension_api(state_dir, watched):
    import mcp_types as t
    from pydantic import ConfigDict
    from mcp import Client, StdioServerParameters
    from mcp.client import ClaimContext, ClientExtension, ResultClaim

    class CreateTaskResult(t.Result):
        model_config = ConfigDict(extra="allow")
        result_type: Literal["task"] = "task"
        task_id: str
        status: str
        created_at: str
        last_updated_at: str
        ttl_ms: int | None
        poll_interval_ms: int | None = None

    class TaskState(t.Result):
        model_config = ConfigDict(extra="allow")
        result_type: str = "complete"
        task_id: str
        status: str
        result: dict | None = None
        error: dict | None = None
        poll_interval_ms: int | None = None

    class TaskIdParams(t.RequestParams):
        task_id: str

    class TasksGet(t.Request[TaskIdParams, Literal["tasks/get"]]):
        method: Literal["tasks/get"] = "tasks/get"
        params: TaskIdParams
        name_param = "taskId"

    seen = []

    async def resolve(created: CreateTaskResult, context: ClaimContext) -> t.CallToolResult:
        seen.append(created.task_id)
        (watched / "sdk").write_text("ready")
        while True:
            state = await context.session.send_request(TasksGet(params=TaskIdParams(task_id=created.task_id)), TaskState)
            if state.status == "completed":
                return t.CallToolResult.model_validate(state.result)
            assert state.status == "working", state
            await anyio.sleep(0.05)

    class Tasks(ClientExtension):
        identifier = TASKS

        def claims(self):
            return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=resolve)]

    async def scenario():
        params = StdioServerParameters(command=str(MOCK), args=["--state-dir", state_dir])
        async with Client(params, mode=MODERN, extensions=[Tasks()]) as client:
            result = await client.call_tool("wait_for_file", {"path": str(watched / "sdk"), "timeout_ms": 10000})
            assert result.structured_content["ok"] is True and not result.is_error
        assert len(seen) == 1

    anyio.run(scenario)


def test_the_proxy_passes_only_handles_it_saw_created_for_the_grant(state_dir, tmp_path):
    from conftest import BIN_DIR
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "version": "1", "default": "allow", "hide": ["cancel_background_task"],
        "tools": {"wait_for_background_task": {"limits": [
            {"counter": "waits", "window": "hour", "max": 5, "scope": "grant"}]}},
    }))
    audit_path = tmp_path / "audit.jsonl"
    calls = tmp_path / "calls.jsonl"
    command = [str(BIN_DIR / "corral"), "proxy", "--policy", str(policy), "--audit", str(audit_path), "--grant", "team-a",
               "--", str(MOCK), "--state-dir", state_dir, "--call-log", str(calls)]
    with RawStdio(state_dir, command=command) as client:
        background = command_task(client)
        waiting = client.call("wait_for_background_task", {"task_id": background["task_id"], "timeout_ms": -1}, tasks=True)
        assert waiting["resultType"] == "task"
        assert get(client, waiting["taskId"])["result"]["status"] == "working"
        # The hidden cancel_background_task cannot be reached through tasks/cancel with the background task's id.
        refused = client.request("tasks/cancel", {"taskId": background["task_id"]}, tasks=True)
        assert refused["error"]["code"] == -32602 and "refused by corral" in refused["error"]["message"]
        for guess in ("guess", "0" * 32):
            assert get(client, guess)["error"]["code"] == -32602
        assert client.call("get_background_task", {"task_id": background["task_id"]})["structuredContent"]["status"] == "running"
        # The handle's own tasks/cancel passes; the waited-on task is untouched.
        assert client.request("tasks/cancel", {"taskId": waiting["taskId"]}, tasks=True)["result"]["resultType"] == "complete"
        assert settle(client, waiting["taskId"], {"cancelled"})["status"] == "cancelled"
        assert client.call("get_background_task", {"task_id": background["task_id"]})["structuredContent"]["status"] == "running"
    lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
    tasks_lines = [line for line in lines if line["tool"].startswith("tasks/")]
    assert [(line["tool"], line["decision"]) for line in tasks_lines] == [
        ("tasks/get", "forwarded"), ("tasks/cancel", "refused"), ("tasks/get", "refused"), ("tasks/get", "refused"),
        ("tasks/cancel", "forwarded")] + [("tasks/get", "forwarded")] * (len(tasks_lines) - 5)
    assert tasks_lines[1]["task_id"] == background["task_id"] and tasks_lines[1]["grant"] == "team-a"
    # The call that made the task was decided and counted once.
    assert [line["tool"] for line in lines].count("wait_for_background_task") == 1
    executed = [json.loads(line).get("tool") for line in calls.read_text().splitlines()]
    assert executed.count("wait_for_background_task") == 1 and "cancel_background_task" not in executed


def test_a_client_that_cannot_elicit_is_never_asked(state_dir):
    """The handle of a client that did not declare elicitation stays `working` while the task waits for its user:
    an elicitation it never said it could show would leave it stuck."""
    with RawStdio(state_dir) as client:
        background = command_task(client)
        waiting = client.call("wait_for_background_task", {"task_id": background["task_id"], "timeout_ms": -1}, tasks=True)
        client.call("mark_task_waiting_for_user", {"task_id": background["task_id"], "question": "which branch?"})
        time.sleep(0.5)
        task = get(client, waiting["taskId"])["result"]
        assert task["status"] == "working" and "inputRequests" not in task, task
        client.call("cancel_background_task", {"task_id": background["task_id"]})
        assert settle(client, waiting["taskId"], {"completed"})["status"] == "completed"
