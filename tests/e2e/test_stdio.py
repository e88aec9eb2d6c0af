"""allcanuse-mock over stdio, driven by the Python MCP SDK: real processes behind every tool."""

import json
import pathlib
import platform
import subprocess
import time

import pytest

from conftest import MOCK, call, mock_session, process_state, run, tree_members
from raw_client import RawStdio, stop_reading_then_create, write_modern


def test_lifecycle_of_a_real_process(state_dir):
    async def scenario():
        async with mock_session(state_dir) as session:
            tools = await session.list_tools()
            assert len(tools.tools) == 26
            task = await call(session, "create_background_task", {
                "title": "ticker", "goal": "tick", "task_type": "command",
                "condition": {"command": "for i in $(seq 1 400); do echo tick $i; sleep 0.05; done"},
            })
            task_id, pid = task["task_id"], task["pid"]
            assert task["status"] == "running"
            assert process_state(pid) is not None

            paused = await call(session, "pause_background_task", {"task_id": task_id, "reason": "e2e"})
            assert paused["status"] == "paused"
            cgroup = pathlib.Path(paused["cgroup"]) if paused.get("cgroup") else None
            if cgroup:
                assert "frozen 1" in (cgroup / "cgroup.events").read_text()
            else:
                assert process_state(pid) == "T"
            resumed = await call(session, "resume_background_task", {"task_id": task_id})
            assert resumed["status"] == "running"

            event = await call(session, "append_task_event", {"task_id": task_id, "message": "hello", "data": {"n": 1}})
            events = await call(session, "list_task_events", {"task_id": task_id})
            assert any(e["event_id"] == event["event_id"] and e["data"] == {"n": 1} for e in events["events"])

            time.sleep(0.3)
            output = await call(session, "get_task_output", {"task_id": task_id, "tail_bytes": 4096})
            assert "tick 1\n" in output["text"]

            cancelled = await call(session, "cancel_background_task", {"task_id": task_id})
            assert cancelled["status"] == "cancelled"
            assert process_state(pid) is None
            assert tree_members(pid) == []

    run(scenario())


def test_wait_completion_and_timeout(state_dir):
    async def scenario():
        async with mock_session(state_dir) as session:
            quick = await call(session, "create_background_task", {
                "title": "quick", "goal": "exit 0", "task_type": "command", "condition": {"argv": ["/bin/true"]},
            })
            waited = await call(session, "wait_for_background_task", {"task_id": quick["task_id"], "timeout_ms": 10000})
            assert waited["condition_met"] is True
            assert waited["last_result"]["status"] == "completed"

            slow = await call(session, "create_background_task", {
                "title": "slow", "goal": "too long", "task_type": "command", "timeout_ms": 300,
                "condition": {"argv": ["/bin/sleep", "30"]},
            })
            waited = await call(session, "wait_for_background_task", {"task_id": slow["task_id"]})
            assert waited["last_result"]["task"]["status"] == "failed"
            assert waited["last_result"]["task"]["last_error"] == "timed out after 300 ms"

            early = await call(session, "wait_for_background_task", {
                "task_id": slow["task_id"], "target_statuses": ["running"], "timeout_ms": 100,
            })
            assert early["condition_met"] is False

    run(scenario())


def test_policy_denies_and_hides(state_dir, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "version": "1", "default": "deny", "hide": ["cancel_background_task"],
        "tools": {
            "create_background_task": {"limits": [{"counter": "creates", "window": "hour", "max": 2, "scope": "grant"}]},
            "get_background_task": {},
        },
    }))

    async def scenario():
        async with mock_session(state_dir, "--policy", str(policy)) as session:
            names = [tool.name for tool in (await session.list_tools()).tools]
            assert "cancel_background_task" not in names
            denied = await call(session, "cancel_background_task", {"task_id": "x"}, expect_error=True)
            assert denied.content[0].text == '[POLICY DENIED] Tool "cancel_background_task" is hidden by policy'
            denied = await call(session, "list_background_tasks", {}, expect_error=True)
            assert denied.content[0].text == '[POLICY DENIED] Tool "list_background_tasks" is not permitted by policy'
            arguments = {"title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 10}}
            await call(session, "create_background_task", arguments)
            await call(session, "create_background_task", arguments)
            limited = await call(session, "create_background_task", arguments, expect_error=True)
            assert limited.content[0].text.startswith("[POLICY DENIED] Rate limit of 2 per hour reached.")
            assert limited.structured_content["retry_after_ms"] > 0

    run(scenario())


def test_wait_sends_progress_when_asked(state_dir):
    async def scenario():
        async with mock_session(state_dir) as session:
            task = await call(session, "create_background_task", {
                "title": "nap", "goal": "progress", "task_type": "sleep", "condition": {"duration_ms": 700},
            })
            updates = []

            async def on_progress(progress, total, message):
                updates.append((progress, total, message))

            result = await session.call_tool(
                "wait_for_background_task",
                {"task_id": task["task_id"], "timeout_ms": 10000, "poll_interval_ms": 100},
                progress_callback=on_progress)
            assert result.structured_content["condition_met"] is True
            assert len(updates) >= 3, updates
            assert all(total == 10000 for _, total, _ in updates)
            assert updates[0][2] == "waiting; task is waiting"
            assert [p for p, _, _ in updates] == sorted(p for p, _, _ in updates)

    run(scenario())


def test_bad_flags_are_refused_before_the_state_directory_is_touched(tmp_path):
    import subprocess

    state = tmp_path / "state"
    for args, message in [
        (["--http", "1.2.3.4"], "--http wants HOST:PORT"),
        (["--call-log", "/nonexistent-dir/calls.jsonl"], "--call-log: cannot open"),
        (["--workspace", str(tmp_path / "missing")], "is not a directory"),
        (["--retain-finished", "12h"], "--retain-finished: retention must be all, a count"),
        (["--retain-finished=-3"], "--retain-finished: retention must be all, a count"),
        (["--busy-poll-us=-1"], "--busy-poll-us wants 0 to 100000 microseconds"),
        (["--busy-poll-us", "200000"], "--busy-poll-us wants 0 to 100000 microseconds"),
        (["--http-request-timeout-ms", "0"], "--http-request-timeout-ms must be at least 1"),
        (["--http-max-connections", "0"], "--http-max-connections must be at least 1"),
        (["--log-level", "verbose"], "unknown --log-level verbose"),
        (["--sandbox-floor", "lenient"], "lenient"),
    ]:
        done = subprocess.run([str(MOCK), "--state-dir", str(state), *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=20)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
        assert not state.exists()


def test_retain_finished_keeps_the_newest_finished_tasks_and_their_output(state_dir):
    """--retain-finished 2: of five finished tasks the two newest stay, with their output; the running one stays."""

    async def scenario():
        async with mock_session(state_dir, "--retain-finished", "2") as session:
            finished = []
            for index in range(5):
                created = await call(session, "create_background_task", {
                    "title": f"t{index}", "goal": "retention", "task_type": "command",
                    "condition": {"argv": ["/bin/echo", f"out{index}"]}})
                await call(session, "wait_for_background_task", {"task_id": created["task_id"], "timeout_ms": 10000})
                finished.append(created["task_id"])
            running = await call(session, "create_background_task", {
                "title": "long", "goal": "retention", "task_type": "sleep", "condition": {"duration_ms": 60000}})
            deadline = time.monotonic() + 10
            while True:
                listed = await call(session, "list_background_tasks", {"limit": 10})
                if listed["total_count"] == 3 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            ids = {task["task_id"] for task in listed["tasks"]}
            assert ids == {running["task_id"], *finished[-2:]}, listed
            assert listed["total_count"] == 3
            for kept, index in [(finished[-2], 3), (finished[-1], 4)]:
                output = await call(session, "get_task_output", {"task_id": kept})
                assert output["text"] == f"out{index}\n"
            gone = await call(session, "get_background_task", {"task_id": finished[0]}, expect_error=True)
            assert "unknown task" in gone.content[0].text, gone.content
            assert not (pathlib.Path(state_dir) / "tasks" / finished[0]).exists()
            assert (pathlib.Path(state_dir) / "tasks" / finished[-1]).exists()

    run(scenario())


def _cpu_ticks(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks (10 ms here)


def test_busy_poll_spins_after_an_answer_and_never_while_idle(state_dir):
    """--busy-poll-us 80000: after an answer the reading thread spins (CPU is spent, ~80 ms of it), and then sleeps:
    a second of idle costs nothing. Without the flag nothing is spent after the answer. Both servers answer alike."""
    import subprocess
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}})
    spent = {}
    for flags in (["--busy-poll-us", "80000"], []):
        server = subprocess.Popen([str(MOCK), "--state-dir", f"{state_dir}/{len(flags)}", "--log-level", "error", *flags],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            time.sleep(1.0)  # start-up work is done and the thread asleep
            before = _cpu_ticks(server.pid)
            server.stdin.write((request + "\n").encode())
            server.stdin.flush()
            answer = json.loads(server.stdout.readline())
            assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "allcanuse-mock", answer
            time.sleep(0.5)
            after_answer = _cpu_ticks(server.pid)
            time.sleep(1.0)
            after_idle = _cpu_ticks(server.pid)
            spent[len(flags)] = (after_answer - before, after_idle - after_answer)
        finally:
            server.stdin.close()
            server.wait(timeout=20)
    spinning, still = spent[2], spent[0]
    assert spinning[0] >= 3, f"the spinning server spent {spinning[0]} ticks in the 80 ms window and its answer"
    assert spinning[1] <= 1, f"the spinning server spent {spinning[1]} ticks in a second of idle"
    assert still[0] <= 2 and still[1] <= 1, f"without --busy-poll-us the server spent {still} ticks"


def test_calls_sent_at_start_are_answered_and_a_failed_start_answers_them_with_its_reason(state_dir):
    """Requests written before the server could have started anything all get their answers: discover, and a create
    that waits for the task supervisor and really runs. A second server on the same state directory cannot start
    its supervisor: it still answers discover, answers its tool call with an error naming the reason, and exits 1
    with the reason on stderr. A third, whose client keeps stdin open and sends nothing, still ends."""
    from raw_client import RawStdio
    task = None
    with RawStdio(state_dir) as first:
        discover = first.start("server/discover")
        create = first.start("tools/call", {"name": "create_background_task", "arguments": {
            "title": "early", "goal": "runs", "task_type": "command", "condition": {"argv": ["/bin/sleep", "30"]}}})
        assert first.answer(discover)["result"]["serverInfo"]["name"] == "allcanuse-mock"
        task = first.answer(create)["result"]["structuredContent"]
        assert task["status"] == "running" and process_state(task["pid"]) is not None, task

        second = RawStdio(state_dir)
        discover, listing = second.start("server/discover"), second.start("tools/call", {
            "name": "list_background_tasks", "arguments": {}})
        assert second.close() == 1
        second.reader.join(timeout=5)
        assert "in use by another supervisor" in second.process.stderr.read()
        assert second.answer(discover, timeout=1)["result"]["serverInfo"]["name"] == "allcanuse-mock"
        refused = second.answer(listing, timeout=1)
        assert refused["error"]["code"] == -32603, refused
        assert "in use by another supervisor" in refused["error"]["message"], refused

        third = RawStdio(state_dir)
        try:
            started = time.monotonic()
            assert third.process.wait(timeout=15) == 1
            assert time.monotonic() - started < 10
            assert "in use by another supervisor" in third.process.stderr.read()
        finally:
            third.close()

        # The first server and its task are untouched.
        assert first.call("get_background_task", {"task_id": task["task_id"]})["structuredContent"]["status"] == "running"
    assert task is None or process_state(task["pid"]) is None


def test_the_main_thread_waits_for_the_command_instead_of_exiting_at_start(state_dir):
    """An async main ends the main thread in dispatch_main: its pthread_exit unwinds the stack (leaving the binary's
    unwind tables resident), then libdispatch parks the thread in rt_sigsuspend. The server's main thread must wait
    for the command on a futex instead, and the server must still end with 0 at the end of stdin and with 64 on bad
    flags."""
    futex = {"x86_64": 202, "aarch64": 98}.get(platform.machine())
    if futex is None:
        pytest.skip(f"no futex syscall number known for {platform.machine()}")
    client = RawStdio(state_dir)
    try:
        assert "result" in client.request("server/discover")
        assert "structuredContent" in client.call("list_background_tasks", {"limit": 1})
        pid = client.process.pid
        try:
            blocked_in = pathlib.Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()[0]
        except PermissionError:
            pytest.skip("reading another process's /proc/PID/syscall needs root (CI runs as root)")
        assert blocked_in == str(futex), f"the main thread is in syscall {blocked_in}, not futex ({futex})"
    finally:
        code = client.close()
    assert code == 0
    refused = subprocess.run([str(MOCK), "--state-dir", state_dir, "--grace-ms", "not-a-number"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=20)
    assert refused.returncode == 64 and "--grace-ms" in refused.stderr, refused.stderr


@pytest.mark.parametrize("stop", ["sigterm", "end of input"])
def test_keep_tasks_ends_the_server_and_its_tasks(state_dir, stop):
    """--keep-tasks over stdio, at SIGTERM or at the end of stdin: the server ends promptly with 0, the task's process
    ends with it, unrecorded, and the next start marks the task failed."""
    import signal

    client = RawStdio(state_dir, "--keep-tasks")
    try:
        task = client.call("create_background_task", {
            "title": "kept", "goal": "g", "task_type": "command",
            "condition": {"argv": ["/bin/sh", "-c", "sleep 600 & wait"]}})
        pid = client.call("get_background_task", {"task_id": task["structuredContent"]["task_id"]})["structuredContent"]["pid"]
        deadline = time.monotonic() + 5
        while len(tree_members(pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(tree_members(pid)) >= 2, "the task's shell and its sleep"
        began = time.monotonic()
        if stop == "sigterm":
            client.process.send_signal(signal.SIGTERM)
        else:
            client.process.stdin.close()
        assert client.process.wait(timeout=15) == 0
        assert time.monotonic() - began < 5
    finally:
        client.close()
    assert process_state(pid) is None and tree_members(pid) == []
    with RawStdio(state_dir) as again:
        shown = again.call("get_background_task", {"task_id": task["structuredContent"]["task_id"]})["structuredContent"]
    assert shown["status"] == "failed", shown
    assert "supervisor stopped while the task was running" in shown["last_error"], shown


def test_a_client_that_stops_reading_is_an_epipe_not_a_signal(state_dir):
    """The server ignores SIGPIPE once, process-wide, and writes its answers without blocking it per write: a client
    that closes its end of stdout must cost the server nothing but the lost answers. It keeps serving (a task it is
    asked to create after the close really runs) and ends with 0 at the end of stdin, not killed by SIGPIPE."""
    server = subprocess.Popen([str(MOCK), "--state-dir", state_dir, "--grace-ms", "300"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        write_modern(server.stdin, 1, "server/discover")
        assert json.loads(server.stdout.readline())["id"] == 1
        printed = stop_reading_then_create(server, state_dir, "after-close", flood=38)
        assert server.poll() is None, f"the server ended with {server.returncode} after its client stopped reading"
        assert printed, "a task created after the client stopped reading did not run"
    finally:
        server.stdin.close()
        code = server.wait(timeout=30)
    assert code == 0, f"the server ended with {code} (-13 is SIGPIPE)"


def test_every_request_in_flight_is_answered_when_input_ends(state_dir):
    """At the end of stdin the server answers what it was asked: a wait on a task ends with the task (cancelled),
    a `wait` of a minute is ended with an error under its id (it was dropped, and the server exited 10 s later)."""
    with RawStdio(state_dir) as server:
        task = server.call("create_background_task", {
            "title": "t", "goal": "g", "task_type": "command", "condition": {"argv": ["/bin/sleep", "60"]}})
        waiting = server.start("tools/call", {"name": "wait_for_background_task",
                                              "arguments": {"task_id": task["structuredContent"]["task_id"], "timeout_ms": -1}})
        sleeping = server.start("tools/call", {"name": "wait", "arguments": {"duration_ms": 60000}})
        time.sleep(0.3)
        started = time.monotonic()
        server.process.stdin.close()
        assert server.answer(waiting, timeout=10)["result"]["structuredContent"]["last_result"]["status"] == "cancelled"
        ended = server.answer(sleeping, timeout=10)
        assert ended["error"]["code"] == -32000 and "shutting down" in ended["error"]["message"], ended
        assert server.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 6


def test_many_tasks_under_a_low_open_file_limit(state_dir):
    """Each task holds a dozen descriptors in the server: started with a soft limit of 64, the mock raises its own to
    the hard limit (here 4096) and serves 30 tasks at once, while the tasks keep the 64 they were given."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    import os

    params = StdioServerParameters(
        command="prlimit", args=["--nofile=64:4096", str(MOCK), "--state-dir", state_dir, "--grace-ms", "300"])

    async def scenario():
        with open(os.devnull, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    ids = []
                    for n in range(30):
                        task = await call(session, "create_background_task", {
                            "title": f"sleeper {n}", "goal": "hold descriptors", "task_type": "command",
                            "condition": {"argv": ["/bin/sleep", "30"]},
                        })
                        ids.append(task["task_id"])
                    limit = await call(session, "create_background_task", {
                        "title": "limit", "goal": "print ulimit -n", "task_type": "command",
                        "condition": {"command": "ulimit -n"},
                    })
                    await call(session, "wait_for_background_task", {"task_id": limit["task_id"], "timeout_ms": 10000})
                    output = await call(session, "get_task_output", {"task_id": limit["task_id"]})
                    assert output["text"] == "64\n"
                    for task_id in ids:
                        cancelled = await call(session, "cancel_background_task", {"task_id": task_id})
                        assert cancelled["status"] == "cancelled"

    run(scenario())
