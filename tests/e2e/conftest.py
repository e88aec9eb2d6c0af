"""Shared helpers: start the built allcanuse-mock over stdio and talk to it with the Python MCP SDK."""

import asyncio
import contextlib
import os
import pathlib
import tempfile
import time

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("CORRAL_BIN_DIR", ROOT / ".build" / "debug"))
MOCK = BIN_DIR / "allcanuse-mock"

# The whole suite takes about three minutes; no test should take more than a fraction of this. A hang (a lost answer,
# a process that never ends) then fails its test with every thread's stack (pytest-timeout), and the run goes on.
TEST_TIMEOUT_S = 300


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
def state_dir():
    with tempfile.TemporaryDirectory(prefix="corral-e2e-") as directory:
        yield directory


@contextlib.asynccontextmanager
async def mock_session(state_dir, *extra_args):
    assert MOCK.exists(), f"{MOCK} is missing: run swift build first"
    params = StdioServerParameters(command=str(MOCK), args=["--state-dir", state_dir, "--grace-ms", "300", *extra_args])
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                yield session


async def call(session, tool, arguments=None, expect_error=False):
    result = await session.call_tool(tool, arguments or {})
    assert result.is_error == expect_error, f"{tool}: {result.content}"
    return result.structured_content if not expect_error else result


def run(coroutine):
    return asyncio.run(coroutine)


def process_state(pid):
    """The state letter of /proc/PID/stat, or None when the process is gone (or a zombie)."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    state = text[text.rindex(")") + 2]
    return None if state in "ZX" else state


def wait_for_task_output(state_dir, text, server, timeout=20):
    """Waits until a task of the server on `state_dir` has printed `text` (read from its output file, not through
    the server), or `timeout` passes, or `server` (a Popen) ends. Returns the output files that hold it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        printed = [path for path in pathlib.Path(state_dir, "tasks").glob("*/stdout.head") if text in path.read_text()]
        if printed:
            return printed
        time.sleep(0.05)
    return []


def tree_members(group):
    """Live processes whose process group is `group`."""
    members = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == group and fields[0] not in "ZX":
            members.append(int(entry.name))
    return members


@contextlib.contextmanager
def listening(argv, name):
    """Runs an HTTP server that prints "NAME: listening on URL" on stderr; yields the URL. At the end it must stop
    on SIGTERM with status 0."""
    import re
    import signal
    import subprocess

    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in process.stderr:
            match = re.search(re.escape(name) + r": listening on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        assert url, f"{name} did not start listening"
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()


def http_server(state_dir, *extra_args):
    """allcanuse-mock serving Streamable HTTP on a free loopback port; yields the endpoint URL."""
    return listening([str(MOCK), "--http", "127.0.0.1:0", "--state-dir", state_dir, "--grace-ms", "300", *extra_args],
                     "allcanuse-mock")


@contextlib.asynccontextmanager
async def http_session(url):
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            yield session
