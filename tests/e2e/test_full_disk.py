"""A full disk under the records that prove what ran: corral proxy's audit log and allcanuse-mock's call log.

A call whose line cannot be written is refused, never run unrecorded; once there is room again, calls go on and the
counters the refused calls took are back. The disk is a real one: a small tmpfs, filled by a file the test owns.
"""

import contextlib
import json
import os
import subprocess
import tempfile

import pytest
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from conftest import BIN_DIR, MOCK, listening, mock_session, run

CORRAL = BIN_DIR / "corral"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")

SLEEP = {"title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 20000}}


@contextlib.contextmanager
def full_disk():
    """A 64 KiB tmpfs, filled to the last byte by `filler` (delete it to make room)."""
    with tempfile.TemporaryDirectory(prefix="corral-full-") as directory:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", directory], check=True)
        try:
            filler = os.path.join(directory, "filler")
            with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 4096)
            yield directory, filler
        finally:
            subprocess.run(["umount", "-l", directory], check=True)  # lazily: a file still open must not mask a failure


def executed(calls):
    if not os.path.exists(calls):
        return []
    with open(calls) as handle:
        return [json.loads(line)["tool"] for line in handle if json.loads(line).get("executed")]


def test_the_proxy_refuses_calls_it_cannot_audit_until_there_is_room(state_dir, tmp_path):
    policy, calls, stderr_path = tmp_path / "policy.json", tmp_path / "calls.jsonl", tmp_path / "stderr.txt"
    policy.write_text(json.dumps({
        "version": "1", "default": "deny",
        "tools": {"create_background_task": {"limits": [{"counter": "c", "window": "hour", "max": 3, "scope": "grant"}]},
                  "list_background_tasks": {}},
    }))
    with full_disk() as (disk, filler):
        audit = os.path.join(disk, "audit.jsonl")
        args = ["proxy", "--policy", str(policy), "--audit", audit, "--",
                str(MOCK), "--state-dir", state_dir, "--grace-ms", "300", "--call-log", str(calls)]

        async def scenario():
            with open(stderr_path, "w") as errlog:
                async with stdio_client(StdioServerParameters(command=str(CORRAL), args=args), errlog=errlog) as streams:
                    async with ClientSession(streams[0], streams[1]) as session:
                        await session.initialize()
                        for _ in range(2):
                            refused = await session.call_tool("create_background_task", SLEEP)
                            assert refused.is_error
                            assert refused.content[0].text.startswith(
                                "[POLICY DENIED] the audit trail could not record this call, so it was not forwarded: "
                                f"cannot append to {audit}: No space left on device"), refused.content[0].text
                            assert refused.structured_content["rule"] == "audit"
                        assert executed(calls) == [], "the mock never saw a call the proxy could not audit"
                        os.remove(filler)
                        outcomes = [(await session.call_tool("create_background_task", SLEEP)).is_error for _ in range(4)]
                        assert outcomes == [False, False, False, True], "the refused calls gave their counters back"
                        listing = await session.call_tool("list_background_tasks", {})
                        assert listing.structured_content["total_count"] == 3

        run(scenario())
        with open(audit) as handle:
            lines = [json.loads(line) for line in handle]
    assert [line["decision"] for line in lines] == ["allow"] * 3 + ["deny", "allow"]
    assert executed(calls) == ["create_background_task"] * 3 + ["list_background_tasks"]
    stderr = stderr_path.read_text()
    assert stderr.count("calls are refused until their audit lines can be written") == 1, stderr
    assert stderr.count("audit lines are written again") == 1, stderr


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_2026_07_28_client_is_refused_the_same_way(state_dir, tmp_path, transport):
    """The same refusal for a stateless 2026-07-28 client (the Python SDK's Client), through corral proxy over stdio
    and over Streamable HTTP: nothing reaches the mock, and the counters are back once there is room."""
    policy, calls = tmp_path / "policy.json", tmp_path / "calls.jsonl"
    policy.write_text(json.dumps({
        "version": "1", "default": "deny",
        "tools": {"create_background_task": {"limits": [{"counter": "c", "window": "hour", "max": 2, "scope": "grant"}]}},
    }))
    with full_disk() as (disk, filler):
        audit = os.path.join(disk, "audit.jsonl")
        args = ["--policy", str(policy), "--audit", audit, "--",
                str(MOCK), "--state-dir", state_dir, "--grace-ms", "300", "--call-log", str(calls)]

        async def scenario(target):
            async with Client(target, mode="2026-07-28") as client:
                assert client.protocol_version == "2026-07-28"
                refused = await client.call_tool("create_background_task", SLEEP)
                assert refused.is_error and refused.structured_content["rule"] == "audit", refused.content
                assert refused.content[0].text.startswith("[POLICY DENIED] the audit trail could not record this call")
                assert executed(calls) == []
                os.remove(filler)
                outcomes = [(await client.call_tool("create_background_task", SLEEP)).is_error for _ in range(3)]
                assert outcomes == [False, False, True], "the refused call gave its counter back"

        if transport == "stdio":
            run(scenario(StdioServerParameters(command=str(CORRAL), args=["proxy", *args])))
        else:
            with listening(
                    [str(CORRAL), "proxy", "--http", "127.0.0.1:0", *args], "corral proxy") as url:
                run(scenario(url))
        with open(audit) as handle:
            assert [json.loads(line)["decision"] for line in handle] == ["allow", "allow", "deny"]
    assert executed(calls) == ["create_background_task"] * 2


def test_the_mock_does_not_run_a_call_its_call_log_cannot_record(state_dir):
    with full_disk() as (disk, filler):
        calls = os.path.join(disk, "calls.jsonl")

        async def scenario():
            async with mock_session(state_dir, "--call-log", calls) as session:
                with pytest.raises(MCPError) as refused:
                    await session.call_tool("create_background_task", SLEEP)
                assert refused.value.error.code == -32603
                assert refused.value.error.message == (
                    f"Internal error: not run: the call log could not record it (cannot append to {calls}: No space left on device)")
                os.remove(filler)
                listing = await session.call_tool("list_background_tasks", {})
                assert listing.structured_content["total_count"] == 0, "the refused create started nothing"

        run(scenario())
        with open(calls) as handle:
            assert [json.loads(line)["tool"] for line in handle] == ["list_background_tasks"]
