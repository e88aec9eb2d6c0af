"""The 8 wait tools and the watcher task types against real files, ports, HTTP servers and processes; the real
Allcanuse server's own duty tests (its tests/test_duty.py), ported to MCP calls."""

import datetime
import http.server
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import call, mock_session, run
from raw_client import RawStdio


@pytest.fixture
def watched():
    """A directory the task user can reach and read (pytest's tmp_path lies under a 0700 directory: the watcher,
    which runs as the task user, could not see into it, and inotify needs read access)."""
    import pathlib
    import shutil
    import tempfile
    directory = tempfile.mkdtemp(prefix="corral-watched-", dir="/var/tmp")
    os.chmod(directory, 0o755)
    yield pathlib.Path(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def site():
    """A local HTTP server: /probe answers 200 "ready ok", /go redirects there, anything else 404."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/go":
                self.send_response(302)
                self.send_header("Location", "/probe")
                self.end_headers()
                return
            body = b"ready ok" if self.path == "/probe" else b"nothing here"
            self.send_response(200 if self.path == "/probe" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the real server's tests/test_duty.py, as MCP calls ---------------------------------------------------------

def test_duty_wait_and_wait_until_in_the_past(state_dir):
    async def scenario():
        async with mock_session(state_dir) as session:
            waited = await call(session, "wait", {"duration_ms": 20, "reason": "test"})
            assert waited["ok"] and waited["waited_ms"] >= 10 and waited["reason"] == "test"
            past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)).isoformat()
            until = await call(session, "wait_until", {"timestamp": past, "reason": "past"})
            assert until["ok"] and until["remaining_ms_when_started"] == 0
    run(scenario())


def test_duty_wait_for_file_with_text(state_dir, watched):
    path = watched / "ready.txt"
    path.write_text("ready")

    async def scenario():
        async with mock_session(state_dir) as session:
            result = await call(session, "wait_for_file", {"path": str(path), "text_contains": "ready",
                                                            "timeout_ms": 2000, "poll_interval_ms": 50})
            assert result["ok"] and result["last_result"]["condition_met"]
            assert result["last_result"]["text_match"] is True and result["last_result"]["size_bytes"] == 5
    run(scenario())


def test_duty_wait_for_port_on_a_listener(state_dir):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        async def scenario():
            async with mock_session(state_dir) as session:
                result = await call(session, "wait_for_port", {"host": "127.0.0.1", "port": listener.getsockname()[1],
                                                                "timeout_ms": 2000, "poll_interval_ms": 50})
                assert result["ok"] and result["last_result"]["is_open"] is True
        run(scenario())


@pytest.mark.parametrize("floor", ["no-network", "strict"])
def test_port_and_http_waits_under_a_floor_without_tcp_say_why_at_once(state_dir, site, watched, floor):
    """Watchers run as tasks, under the server's --sandbox-floor. Under one that forbids TCP connections they used to
    fail every check until their timeout ("Operation not permitted"); the call is now refused at once, saying why,
    for the wait tools and the watcher task types alike. Other conditions still work under the floor."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        async def scenario():
            async with mock_session(state_dir, "--sandbox-floor", floor) as session:
                began = time.monotonic()
                refusals = [
                    await call(session, "wait_for_port", {"host": "127.0.0.1", "port": port, "timeout_ms": 10000},
                               expect_error=True),
                    await call(session, "wait_for_http", {"url": site + "/probe", "timeout_ms": 10000},
                               expect_error=True),
                    await call(session, "create_background_task", {
                        "title": "p", "goal": "g", "task_type": "wait_port",
                        "condition": {"host": "127.0.0.1", "port": port}}, expect_error=True),
                ]
                assert time.monotonic() - began < 5
                for refusal in refusals:
                    text = refusal.content[0].text
                    assert "sandbox floor" in text, text
                    assert f"the profile {floor} allows only sockets of the families AF_UNIX" in text, text
                # A file watcher needs no network: it still runs under the floor.
                path = watched / "ready.txt"
                path.write_text("ready")
                found = await call(session, "wait_for_file", {"path": str(path), "timeout_ms": 5000,
                                                              "poll_interval_ms": 50})
                assert found["ok"], found
        run(scenario())


def test_duty_wait_for_http_200_with_text(state_dir, site):
    async def scenario():
        async with mock_session(state_dir) as session:
            result = await call(session, "wait_for_http", {
                "url": site + "/probe", "expected_statuses": [200], "text_contains": "ready", "timeout_ms": 2000,
                "poll_interval_ms": 50, "request_timeout_ms": 1000})
            assert result["ok"] and result["last_result"]["status"] == 200
            assert result["last_result"]["text_match"] is True and result["last_result"]["reason"] == "OK"
            redirected = await call(session, "wait_for_http", {"url": site + "/go", "timeout_ms": 2000})
            assert redirected["ok"] and redirected["last_result"]["final_url"] == site + "/probe"
            missing = await call(session, "wait_for_http", {"url": site + "/nope", "timeout_ms": 0})
            assert not missing["ok"] and missing["last_result"]["status"] == 404 and missing["attempts"] == 1
    run(scenario())


def test_duty_windows_without_a_desktop_are_fatal(state_dir):
    async def scenario():
        async with mock_session(state_dir) as session:
            window = await call(session, "wait_for_window", {"title_filter": "chrome", "state": "foreground"})
            assert not window["ok"] and window["fatal_error"] and "graphical" in window["last_result"]["error"]
            change = await call(session, "wait_for_desktop_change", {})
            assert not change["ok"] and change["fatal_error"] and change["attempts"] == 0
            task = await call(session, "create_background_task", {
                "title": "w", "goal": "window", "task_type": "wait_window", "condition": {"title_filter": "Setup"}})
            done = await call(session, "wait_for_background_task", {"task_id": task["task_id"], "timeout_ms": 10000})
            ended = done["last_result"]["task"]
            assert ended["status"] == "failed" and "graphical" in ended["last_error"]
            assert ended["last_result"]["fatal_error"] is True
            refused = await call(session, "create_background_task", {
                "title": "d", "goal": "desktop", "task_type": "wait_desktop_change", "condition": {}}, expect_error=True)
            assert "graphical" in refused.content[0].text
    run(scenario())


def test_duty_sleep_task_completes(state_dir):
    async def scenario():
        async with mock_session(state_dir) as session:
            task = await call(session, "create_background_task", {
                "title": "nap", "goal": "sleep", "task_type": "sleep", "condition": {"duration_ms": 150},
                "poll_interval_ms": 50, "timeout_ms": 3000})
            assert task["status"] == "waiting"
            done = await call(session, "wait_for_background_task", {"task_id": task["task_id"], "timeout_ms": 4000,
                                                                     "poll_interval_ms": 50})
            assert done["ok"] and done["condition_met"] and done["last_result"]["status"] == "completed"
    run(scenario())


def test_duty_plan_event_artifact_summary_handoff_on_a_watcher(state_dir, watched):
    async def scenario():
        async with mock_session(state_dir) as session:
            task = await call(session, "create_background_task", {
                "title": "handoff", "goal": "wait for a file", "task_type": "wait_file",
                "condition": {"path": str(watched / "never")}, "poll_interval_ms": 5000, "timeout_ms": 10000})
            task_id = task["task_id"]
            await call(session, "create_task_plan", {"task_id": task_id, "steps": ["prepare", "check"]})
            await call(session, "update_task_step", {"task_id": task_id, "step_index": 1, "status": "completed"})
            await call(session, "mark_task_waiting_for_user", {"task_id": task_id, "question": "which file?"})
            await call(session, "append_task_event", {"task_id": task_id, "message": "use never", "event_type": "decision"})
            await call(session, "record_task_artifact", {"task_id": task_id, "path": str(watched), "description": "test artifact"})
            summary = await call(session, "summarize_background_task", {"task_id": task_id})
            assert "wait_file" in summary["summary"]
            assert summary["task"]["plan_steps"][0]["status"] == "completed"
            handoff = await call(session, "get_task_handoff", {"task_id": task_id})
            assert "which file?" in handoff["blocker"] and handoff["suggested_next_actions"]
            assert handoff["artifacts"][0]["description"] == "test artifact"
            # As the real server: every step not completed is pending, the current one the first of them.
            assert [s["title"] for s in handoff["pending_steps"]] == ["check"]
            assert handoff["current_step"]["title"] == "check" and len(handoff["current_step"]["step_id"]) == 32
            resumed = await call(session, "resume_background_task", {"task_id": task_id})
            assert resumed["status"] == "waiting_for_condition", "a resume takes the marked task back to work"
            await call(session, "cancel_background_task", {"task_id": task_id})
    run(scenario())


def test_duty_scheduler_counts_watchers(state_dir, watched):
    async def scenario():
        async with mock_session(state_dir) as session:
            task = await call(session, "create_background_task", {
                "title": "nap", "goal": "sleep", "task_type": "sleep", "condition": {"duration_ms": 500}})
            times = await call(session, "get_scheduler_time")
            # By the status get_background_task shows (a sleep task waits), statuses without a task left out.
            shown = (await call(session, "get_background_task", {"task_id": task["task_id"]}))["status"]
            assert shown == "waiting" and times["task_status_counts"] == {"waiting": 1}
            assert times["scheduler"]["running"] is True and times["scheduler"]["load_issue_count"] == 0
            # A standalone wait's own watcher is no background task of the client's.
            waiting = asyncio_create(session, "wait_for_file", {"path": str(watched / "x"), "timeout_ms": 400})
            listed = await call(session, "list_background_tasks", {})
            assert listed["total_count"] == 1 and listed["tasks"][0]["task_id"] == task["task_id"]
            assert not (await waiting)["ok"]
    run(scenario())


def asyncio_create(session, tool, arguments):
    import asyncio
    return asyncio.ensure_future(call(session, tool, arguments))


# --- watcher tasks: real processes under the task runtime ------------------------------------------------------

def test_a_paused_watcher_does_not_fire_and_a_resumed_one_does(state_dir, watched):
    path = watched / "flag"

    async def scenario():
        async with mock_session(state_dir) as session:
            task = await call(session, "create_background_task", {
                "title": "flag", "goal": "file", "task_type": "wait_file", "condition": {"path": str(path)},
                "poll_interval_ms": 60000})
            task_id = task["task_id"]
            assert task["status"] == "waiting_for_condition" and task["pid"] > 0
            deadline = time.monotonic() + 5
            while (await call(session, "get_background_task", {"task_id": task_id}))["watcher_wakeup"] is None:
                assert time.monotonic() < deadline
            assert (await call(session, "get_background_task", {"task_id": task_id}))["watcher_wakeup"] == "inotify"
            paused = await call(session, "pause_background_task", {"task_id": task_id})
            assert paused["status"] == "paused"
            path.write_text("here")
            time_paused = time.monotonic()
            while time.monotonic() - time_paused < 0.5:
                current = await call(session, "get_background_task", {"task_id": task_id})
                assert current["status"] == "paused" and current["check_count"] == 1
            await call(session, "resume_background_task", {"task_id": task_id})
            done = await call(session, "wait_for_background_task", {"task_id": task_id, "timeout_ms": 5000})
            ended = done["last_result"]["task"]
            assert ended["status"] == "completed" and ended["check_count"] == 2
            assert ended["last_result"]["exists"] is True and ended["last_checked_at"] is not None
    run(scenario())


def test_cancel_kills_the_watcher_and_timeout_fails_it(state_dir):
    port = free_port()

    async def scenario():
        async with mock_session(state_dir) as session:
            task = await call(session, "create_background_task", {
                "title": "port", "goal": "open", "task_type": "wait_port",
                "condition": {"host": "127.0.0.1", "port": port}, "poll_interval_ms": 50})
            pid = task["pid"]
            time.sleep(0.3)
            counted = await call(session, "get_background_task", {"task_id": task["task_id"]})
            assert counted["check_count"] >= 2 and counted["last_result"]["is_open"] is False
            assert counted["next_check_at"] is not None
            cancelled = await call(session, "cancel_background_task", {"task_id": task["task_id"]})
            assert cancelled["status"] == "cancelled"
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] in "ZX"
            timed = await call(session, "create_background_task", {
                "title": "port", "goal": "open", "task_type": "wait_port",
                "condition": {"host": "127.0.0.1", "port": port}, "poll_interval_ms": 50, "timeout_ms": 300})
            done = await call(session, "wait_for_background_task", {"task_id": timed["task_id"], "timeout_ms": 5000})
            ended = done["last_result"]["task"]
            assert ended["status"] == "failed" and ended["last_error"] == "timed out after 300 ms"
            assert ended["check_count"] >= 2
    run(scenario())


def test_port_and_http_and_process_watchers_complete(state_dir, site):
    port = free_port()
    sleeper = subprocess.Popen(["sleep", "0.5"])

    async def scenario():
        async with mock_session(state_dir) as session:
            opened = await call(session, "create_background_task", {
                "title": "port", "goal": "open", "task_type": "wait_port",
                "condition": {"host": "127.0.0.1", "port": port}, "poll_interval_ms": 50})
            http_task = await call(session, "create_background_task", {
                "title": "http", "goal": "200", "task_type": "wait_http",
                "condition": {"url": site + "/probe", "text_contains": "ok"}, "poll_interval_ms": 50})
            exited = await call(session, "create_background_task", {
                "title": "pid", "goal": "exit", "task_type": "wait_process",
                "condition": {"pid": sleeper.pid, "state": "exited"}, "poll_interval_ms": 60000})
            with socket.socket() as listener:
                listener.bind(("127.0.0.1", port))
                listener.listen()
                for task, wakeup in ((opened, "poll"), (http_task, "poll"), (exited, "pidfd")):
                    done = await call(session, "wait_for_background_task", {"task_id": task["task_id"], "timeout_ms": 10000})
                    assert done["last_result"]["status"] == "completed", done
                    assert done["last_result"]["task"]["watcher_wakeup"] == wakeup
            sleeper.wait()
    run(scenario())


def test_bad_conditions_are_clear_errors(state_dir):
    async def scenario():
        async with mock_session(state_dir) as session:
            cases = [
                ("wait_for_file", {"path": "/x", "state": "gone"}, "state must be one of exists, missing"),
                ("wait_for_process", {}, "requires pid or name"),
                ("wait_for_process", {"name": "x", "state": "zombie"}, "state must be one of running, exited"),
                ("wait_for_port", {"host": "127.0.0.1", "port": 70000}, "port must be between 1 and 65535"),
                ("wait_for_http", {"url": "https://example.org"}, "no TLS"),
                ("wait_for_http", {"url": "ftp://x"}, "url must start with http://"),
                ("wait_for_http", {"url": "http://x", "method": "GE T"}, "method must be an HTTP method"),
                ("wait_until", {"timestamp": "soon"}, "ISO-8601"),
                ("wait", {}, "missing required argument duration_ms"),
                ("wait_for_file", {"path": "/x", "colour": "red"}, "unknown argument colour"),
            ]
            for tool, arguments, message in cases:
                result = await call(session, tool, arguments, expect_error=True)
                assert message in result.content[0].text, (tool, result.content[0].text)
            refused = await call(session, "create_background_task", {
                "title": "t", "goal": "g", "task_type": "wait_port", "condition": {"host": "h"}}, expect_error=True)
            assert "missing required field port" in refused.content[0].text
    run(scenario())


def test_wait_tools_never_block_other_requests_and_honour_cancellation(state_dir, watched):
    with RawStdio(state_dir) as client:
        slow = client.start("tools/call", {"name": "wait_for_file",
                                           "arguments": {"path": str(watched / "never"), "timeout_ms": -1}})
        begun = time.monotonic()
        answered = client.call("get_scheduler_time")
        assert not answered["isError"] and time.monotonic() - begun < 5
        sleeping = client.start("tools/call", {"name": "wait", "arguments": {"duration_ms": 60000}})
        assert not client.has_answer(slow) and not client.has_answer(sleeping)
        client.cancel(slow)
        client.cancel(sleeping)
        time.sleep(0.5)
        # A cancelled request gets no answer, and the watcher it ran is gone.
        assert not client.has_answer(slow) and not client.has_answer(sleeping)
        watchers = [p for p in os.listdir("/proc") if p.isdigit() and _comm(p) == "allcanuse-watch"
                    and _parent_chain_has(p, client.process.pid)]
        assert watchers == []
        assert client.call("list_background_tasks")["structuredContent"]["total_count"] == 0
    assert client.process.returncode == 0


def _comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return None


def _parent_chain_has(pid, ancestor):
    for _ in range(10):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            return False
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        if parent == ancestor:
            return True
        if parent <= 1:
            return False
        pid = parent
    return False


def test_closing_the_http_stream_kills_a_standalone_waits_watcher(state_dir, watched):
    import http.client
    import json
    import urllib.parse

    from conftest import http_server
    from raw_client import MODERN, meta

    def watchers():
        return {pid for pid in os.listdir("/proc") if pid.isdigit() and _comm(pid) == "allcanuse-watch"}

    with http_server(state_dir) as url:
        before = watchers()
        message = {"jsonrpc": "2.0", "id": "w", "method": "tools/call", "params": {
            "name": "wait_for_file", "arguments": {"path": str(watched / "never"), "timeout_ms": -1}, "_meta": meta()}}
        parts = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.request("POST", parts.path, body=json.dumps(message), headers={
            "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "wait_for_file"})
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        assert response.readline()  # the stream is open (a keep-alive comment)
        started = watchers() - before
        assert len(started) == 1
        (watcher,) = started
        connection.sock.close()
        connection.close()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{watcher}") and _comm(watcher) == "allcanuse-watch":
            assert time.monotonic() < deadline, "the watcher outlived its cancelled request"
            time.sleep(0.05)


def test_a_server_built_where_the_task_user_cannot_reach_copies_its_watcher(state_dir, tmp_path):
    """A checkout under /root or a 0700 temporary directory: the task user could not run allcanuse-watch where it
    was built, so the server runs a copy of its own (root's, 0755, in the task root)."""
    import shutil

    from conftest import BIN_DIR

    private = tmp_path / "private" / "bin"
    private.mkdir(parents=True)
    os.chmod(tmp_path / "private", 0o700)
    for name in ("allcanuse-mock", "allcanuse-watch"):
        shutil.copy2(BIN_DIR / name, private / name)
    with RawStdio(state_dir, command=[str(private / "allcanuse-mock"), "--state-dir", state_dir]) as client:
        result = client.call("wait_for_file", {"path": "/etc/hostname"})
        assert not result["isError"] and result["structuredContent"]["ok"] is True, result
