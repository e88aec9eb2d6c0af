"""Adversarial: a task created through MCP (the Python SDK against allcanuse-mock) or run by `corral exec` tries to use
root's powers, read or signal its server, its neighbours and pid 1, change metadata outside its paths, escape its
limits, and outlive its server. The probe (Tests/SandboxTests/Resources/task_probe.c) refuses to run without a seccomp
filter on itself, and every target is harmless (no-op changes, scratch files of this test, signal 0)."""

import json
import os
import pathlib
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import BIN_DIR, MOCK, ROOT, call, mock_session, process_state, run

CORRAL = BIN_DIR / "corral"
TASK_USER = 65530

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the confinement of a root server's tasks needs root")


@pytest.fixture(scope="module")
def reachable():
    """A directory the task user may read (a checkout under a private directory is not)."""
    directory = tempfile.mkdtemp(prefix="corral-task-probe-")
    os.chmod(directory, 0o755)
    yield directory
    subprocess.run(["rm", "-rf", directory], check=False)


@pytest.fixture(scope="module")
def probe(reachable):
    binary = os.path.join(reachable, "task_probe")
    source = ROOT / "Tests" / "SandboxTests" / "Resources" / "task_probe.c"
    subprocess.run(["cc", "-O1", "-Wall", "-Werror", "-o", binary, str(source)], check=True)
    return binary


@pytest.fixture
def scratch():
    """A root-owned 0644 file outside every path a task may write."""
    directory = tempfile.mkdtemp(prefix="corral-scratch-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "file")
    pathlib.Path(path).write_text("scratch\n")
    os.chmod(path, 0o644)
    yield path
    subprocess.run(["rm", "-rf", directory], check=False)


def lines(text):
    """'key=value rest' lines as {key: 'value rest'}; 'a=1 b=2' lines also give b."""
    found = {}
    for line in text.splitlines():
        for part in line.split(" "):
            if "=" in part and not part.startswith("errno="):
                key, _, value = part.partition("=")
                rest = line[line.index(part) + len(part):].strip()
                found[key] = value + (" " + rest if rest.startswith("errno=") else "")
    return found


async def run_task(session, argv, sandbox=None, wait_ms=20000):
    condition = {"argv": argv}
    if sandbox is not None:
        condition["sandbox"] = sandbox
    task = await call(session, "create_background_task", {
        "title": argv[-1], "goal": "probe", "task_type": "command", "condition": condition,
    })
    waited = await call(session, "wait_for_background_task", {"task_id": task["task_id"], "timeout_ms": wait_ms})
    output = await call(session, "get_task_output", {"task_id": task["task_id"], "tail_bytes": 65536})
    return waited["last_result"], output["text"], task


def test_the_probe_refuses_to_run_without_a_filter(probe):
    result = subprocess.run([probe, "caps"], capture_output=True, text=True)
    assert result.returncode == 3
    assert "refused: no seccomp filter" in result.stderr


def test_task_has_no_identity_or_capability_of_root(state_dir, probe):
    async def scenario():
        async with mock_session(state_dir) as session:
            final, text, task = await run_task(session, [probe, "caps"])
            assert final["status"] == "completed", text
            found = lines(text)
            for prefix in ("", "after_exec_"):
                for name in ("inh", "prm", "eff", "bnd", "amb"):
                    assert found[f"{prefix}cap_{name}"] == "0000000000000000", (prefix, name, text)
                assert found[f"{prefix}uid"] == str(TASK_USER), text
                assert found[f"{prefix}gid"] == str(TASK_USER), text
                assert found[f"{prefix}groups"] == "0", text
                assert found[f"{prefix}no_new_privs"] == "1", text
            record = await call(session, "get_background_task", {"task_id": task["task_id"]})
            assert (record["uid"], record["gid"]) == (TASK_USER, TASK_USER)
            assert "capabilities:none" in record["protections"]
            assert "pid_namespace" in record["protections"]

    run(scenario())


def test_no_privileged_operation_succeeds(state_dir, probe):
    async def scenario():
        async with mock_session(state_dir) as session:
            # "." is the task's own working directory, which Landlock lets it write: the mknod twin of /dev/kmsg
            # would be made there, and only the missing capability stops it.
            final, text, _ = await run_task(session, [probe, "privileged", "."])
            found = lines(text)
            for name in ("settimeofday", "sethostname", "mknod_kmsg", "raw_socket", "setuid_root",
                         "chown_workdir_root"):
                assert found[name] == "fail errno=EPERM", (name, text)
            assert "open_kmsg_twin" not in found, text

    run(scenario())


def test_metadata_outside_the_writable_paths_cannot_change(state_dir, probe, scratch):
    before = os.stat(scratch)

    async def scenario():
        async with mock_session(state_dir) as session:
            _, text, _ = await run_task(session, [probe, "metadata", scratch])
            found = lines(text)
            for name in ("chmod", "chown", "utimensat"):
                assert found[name] == "fail errno=EPERM", (name, text)
            for name in ("setxattr", "write_file"):
                assert found[name] in ("fail errno=EACCES", "fail errno=EPERM"), (name, text)

    run(scenario())
    after = os.stat(scratch)
    assert (after.st_mode, after.st_uid, after.st_gid, after.st_mtime_ns) == \
        (before.st_mode, before.st_uid, before.st_gid, before.st_mtime_ns)
    assert os.listxattr(scratch) == []


def test_the_server_its_state_and_pid_1_are_out_of_reach(state_dir, probe):
    async def scenario():
        async with mock_session(state_dir) as session:
            sleeper = await call(session, "create_background_task", {
                "title": "ppid", "goal": "g", "task_type": "command", "condition": {"argv": ["/bin/sleep", "30"]},
            })
            # The server is the task's parent, seen from outside the task's PID namespace.
            status = pathlib.Path(f"/proc/{sleeper['pid']}/status").read_text()
            server_pid = int(next(l for l in status.splitlines() if l.startswith("PPid:")).split()[1])
            assert pathlib.Path(f"/proc/{server_pid}/exe").resolve() == MOCK.resolve()
            await call(session, "cancel_background_task", {"task_id": sleeper["task_id"]})
            state_file = os.path.join(state_dir, "tasks.sqlite")
            _, text, _ = await run_task(session, [probe, "server", str(server_pid), state_file])
            found = lines(text)
            for name in ("server_environ", "server_mem", "server_fd_dir", "server_state"):
                assert found[name] == "fail errno=EACCES", (name, text)
            # Not in the task's PID namespace at all (ESRCH), or another user's (EPERM).
            assert found["signal_server"] in ("fail errno=ESRCH", "fail errno=EPERM"), text
            assert found["signal_pid1"] == "fail errno=EPERM", text
            # The state directory itself cannot be listed.
            _, listing, _ = await run_task(session, ["/bin/ls", state_dir])
            assert "tasks.sqlite" not in listing

    run(scenario())


def _landlock_abi():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return max(0, libc.syscall(444, None, 0, 1))


@pytest.mark.skipif(_landlock_abi() < 6, reason="signals between tasks are scoped by Landlock ABI 6 (Linux 6.12)")
def test_a_task_cannot_signal_another_task(state_dir, probe):
    async def scenario():
        async with mock_session(state_dir) as session:
            victim = await call(session, "create_background_task", {
                "title": "victim", "goal": "g", "task_type": "command", "condition": {"argv": ["/bin/sleep", "30"]},
            })
            _, text, _ = await run_task(session, [probe, "signal", str(victim["pid"])])
            found = lines(text)
            # The neighbour's pid inside the shared namespace is readable, but Landlock's signal scope stops the signal.
            assert found["other_nspid"].isdigit(), text
            assert found["signal_other_ns_pid"] == "fail errno=EPERM", text
            # A pidfd of the neighbour (by its host pid, unknown in this namespace, or found some other way) must
            # not carry a signal either.
            assert found.get("pidfd_signal_other") != "ok errno=0", text
            assert process_state(victim["pid"]) is not None
            await call(session, "cancel_background_task", {"task_id": victim["task_id"]})

    run(scenario())


def test_mount_api_and_syscalls_newer_than_the_profile_are_refused(state_dir, probe):
    async def scenario():
        async with mock_session(state_dir) as session:
            _, text, _ = await run_task(session, [probe, "open_tree_attr"])
            found = lines(text)
            for name in ("open_tree_attr", "open_tree", "syscall_above_table"):
                assert found[name] == "fail errno=ENOSYS", (name, text)

    run(scenario())


def test_cgroup_limits_hold_for_a_task(state_dir, probe):
    async def scenario():
        async with mock_session(state_dir) as session:
            final, text, task = await run_task(session, [probe, "forks", "64"], sandbox={"limits": {"processes": 16}})
            found = lines(text)
            assert found["forks_errno"] == "EAGAIN", text
            assert int(found["forks_ok"]) < 16, text
            assert "cgroup_limits:processes=16" in task["protections"]

            final, text, hog = await run_task(session, [probe, "memhog", "512"],
                                              sandbox={"limits": {"memory": 64 << 20}})
            assert final["status"] == "failed", text
            record = await call(session, "get_background_task", {"task_id": hog["task_id"]})
            assert "killed by the memory limit" in record["last_error"], record
            assert 0 < record["peak_memory_bytes"] <= 64 << 20, record
            assert "memhog=done" not in text

            refused = await call(session, "create_background_task", {
                "title": "looser", "goal": "g", "task_type": "command",
                "condition": {"argv": ["/bin/true"], "sandbox": {"limits": {"processes": 0}}},
            }, expect_error=True)
            assert "must be positive" in refused.content[0].text
            # Outside input that would overflow the cgroup value is refused, and the server lives on.
            huge = await call(session, "create_background_task", {
                "title": "huge", "goal": "g", "task_type": "command",
                "condition": {"argv": ["/bin/true"], "sandbox": {"limits": {"cpu_percent": 10 ** 15}}},
            }, expect_error=True)
            assert "at most 100000" in huge.content[0].text
            await call(session, "list_background_tasks", {"limit": 1})

    run(scenario())


def test_ordinary_programs_still_work(state_dir, reachable):
    swift_binary = os.path.join(reachable, "corral")
    subprocess.run(["cp", str(CORRAL), swift_binary], check=True)

    async def scenario():
        async with mock_session(state_dir) as session:
            script = ("set -e; echo hi | tr a-z A-Z; ls / >/dev/null; python3 -c 'print(6*7)'; "
                      "printf 'int main(void){return 0;}' > t.c; cc -o t t.c; ./t; echo compiled; "
                      f"{swift_binary} --help >/dev/null; echo swift; git init -q repo; test -d repo/.git; echo git")
            final, text, _ = await run_task(session, ["/bin/sh", "-c", script])
            assert final["status"] == "completed", (final, text)
            assert text.split() == ["HI", "42", "compiled", "swift", "git"], text

    run(scenario())


def test_no_task_process_outlives_a_killed_server(state_dir):
    # Only processes of this test count (a task user's process left by something else must not confuse it).
    before = {p.name for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()}
    process = subprocess.Popen([str(MOCK), "--state-dir", state_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)

    def rpc(request_id, method, params):
        process.stdin.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}) + "\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())

    rpc(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})
    acknowledged = []
    for index in range(4):
        answer = rpc(index + 1, "tools/call", {"name": "create_background_task", "arguments": {
            "title": f"tree {index}", "goal": "children that leave their group and session", "task_type": "command",
            "condition": {"command": "setsid sleep 300 & (sleep 301 &); sh -c 'sleep 302 & wait' & sleep 303"}}})
        acknowledged.append(answer["result"]["structuredContent"]["task_id"])
    time.sleep(0.5)
    task_user_processes = lambda: [p for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()
                                   and p.name not in before and _owner(p) == TASK_USER
                                   and process_state(int(p.name)) is not None]
    assert len(task_user_processes()) >= 4 * 5
    process.kill()
    process.wait()
    time.sleep(1)
    assert task_user_processes() == []

    async def after_restart():
        async with mock_session(state_dir) as session:
            listed = await call(session, "list_background_tasks", {"limit": 50})
            ids = {task["task_id"]: task for task in listed["tasks"]}
            for task_id in acknowledged:
                assert task_id in ids
                assert ids[task_id]["status"] == "failed"

    run(after_restart())


def _owner(path):
    try:
        return path.stat().st_uid
    except (FileNotFoundError, ProcessLookupError):
        return None


def corral_exec(*arguments, cwd):
    return subprocess.run([str(CORRAL), "exec", *arguments], capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.fixture
def task_user_cwd(reachable):
    """A working directory the task user owns, in a directory it can reach."""
    path = tempfile.mkdtemp(dir=reachable)
    os.chmod(path, 0o755)
    os.chown(path, TASK_USER, TASK_USER)
    return pathlib.Path(path)


def test_corral_exec_drops_root_unless_told_not_to(probe, task_user_cwd):
    tmp_path = task_user_cwd
    result = corral_exec("--", probe, "caps", cwd=tmp_path)
    found = lines(result.stdout)
    assert found["cap_eff"] == "0000000000000000" and found["cap_bnd"] == "0000000000000000", result.stdout
    assert found["after_exec_cap_prm"] == "0000000000000000", result.stdout
    assert found["uid"] == str(TASK_USER)
    result = corral_exec("--", probe, "privileged", str(tmp_path), cwd=tmp_path)
    found = lines(result.stdout)
    for name in ("settimeofday", "sethostname", "mknod_kmsg", "raw_socket", "setuid_root", "chown_workdir_root"):
        assert found[name] == "fail errno=EPERM", (name, result.stdout)
    # The control: with root kept, the same probe sees root's powers, so the assertions above can fail.
    control = lines(corral_exec("--keep-root", "--", probe, "caps", cwd=tmp_path).stdout)
    assert control["cap_eff"] != "0000000000000000" and control["uid"] == "0", control
    control = lines(corral_exec("--keep-root", "--", probe, "privileged", ".", cwd=tmp_path).stdout)
    assert control["settimeofday"] == "ok errno=0" and control["sethostname"] == "ok errno=0", control
    kept = corral_exec("--keep-root", "--", "/usr/bin/id", "-u", cwd=tmp_path)
    assert kept.stdout == "0\n"
    assert "warning: --keep-root" in kept.stderr
    other = corral_exec("--user", "65534:65534", "--", "/usr/bin/id", "-u", cwd=tmp_path)
    assert other.stdout == "65534\n", other.stderr
    bad = corral_exec("--user", "0", "--", "/bin/true", cwd=tmp_path)
    assert bad.returncode == 125 and "may not be root" in bad.stderr


def test_corral_exec_limits_and_report(probe, task_user_cwd):
    tmp_path = task_user_cwd
    result = corral_exec("--limit", "processes=16", "--report", "--", probe, "forks", "64", cwd=tmp_path)
    found = lines(result.stdout)
    assert found["forks_errno"] == "EAGAIN" and int(found["forks_ok"]) < 16, result.stdout
    assert "CPU time: user" in result.stderr and "I/O: read" in result.stderr, result.stderr
    hog = corral_exec("--limit", "memory=64M", "--", probe, "memhog", "512", cwd=tmp_path)
    assert hog.returncode == 128 + signal.SIGKILL
    assert "killed by the memory limit" in hog.stderr
    unknown = corral_exec("--limit", "processes=lots", "--", "/bin/true", cwd=tmp_path)
    assert unknown.returncode == 125 and "processes" in unknown.stderr
    huge = corral_exec("--limit", "cpu_percent=1000000000000000", "--", "/bin/true", cwd=tmp_path)
    assert huge.returncode == 125 and "at most 100000" in huge.stderr, huge.stderr


def test_a_server_that_is_not_root_keeps_its_uid_and_says_what_it_cannot_do(reachable):
    """Degrades cleanly: tasks keep the server's uid, without capabilities; no PID namespace (that needs root), and
    a cgroup limit it cannot enforce fails the task with the reason instead of being dropped."""
    import contextlib
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    binary = os.path.join(reachable, "allcanuse-mock")
    subprocess.run(["cp", str(MOCK), binary], check=True)
    state = tempfile.mkdtemp(dir=reachable)
    os.chown(state, 65534, 65534)

    async def scenario():
        params = StdioServerParameters(command="/usr/bin/setpriv", args=[
            "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", binary, "--state-dir", state])
        with open(os.devnull, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    final, text, task = await run_task(session, ["/bin/sh", "-c", "id -u; grep CapEff /proc/self/status"])
                    assert final["status"] == "completed", text
                    assert text.split()[:3] == ["65534", "CapEff:", "0000000000000000"], text
                    assert "pid_namespace:unavailable" in task["protections"]
                    # Without CAP_SETPCAP the bounding set cannot be emptied, and the record says so.
                    assert "capabilities:none_effective,bounding_set_kept" in task["protections"]
                    limited = await call(session, "create_background_task", {
                        "title": "limited", "goal": "g", "task_type": "command",
                        "condition": {"argv": ["/bin/true"], "sandbox": {"limits": {"processes": 4}}}})
                    assert limited["status"] == "failed"
                    assert "cannot be enforced" in limited["last_error"], limited
                    refused = await call(session, "create_background_task", {
                        "title": "t", "goal": "g", "task_type": "command", "condition": {"argv": ["/bin/true"]}})
                    assert refused["uid"] == 65534

    run(scenario())
    bad = subprocess.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", binary,
                          "--state-dir", state, "--task-user", "65533"], capture_output=True, text=True, input="")
    assert bad.returncode != 0 and "only when the server runs as root" in bad.stderr, bad.stderr


def test_corral_exec_leaves_nothing_running(task_user_cwd):
    """A command that leaves a daemon behind: the daemon ends with the command, and a kill -9 of corral ends all."""
    marker = f"corral-exec-left-{os.getpid()}"
    result = corral_exec("--", "/bin/sh", "-c", f"setsid bash -c 'exec -a {marker} sleep 300' & echo started",
                         cwd=task_user_cwd)
    assert result.stdout == "started\n", result.stderr
    time.sleep(0.3)
    # Anchored: corral's own command line holds the marker too, the daemon's starts with it.
    assert subprocess.run(["pgrep", "-f", "^" + marker], capture_output=True).returncode == 1

    process = subprocess.Popen([str(CORRAL), "exec", "--", "/bin/sh", "-c",
                                f"setsid bash -c 'exec -a {marker} sleep 300' & sleep 300"], cwd=task_user_cwd)
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", "^" + marker], capture_output=True).returncode == 0
    process.kill()
    process.wait()
    time.sleep(1)
    assert subprocess.run(["pgrep", "-f", "^" + marker], capture_output=True).returncode == 1


def test_task_user_and_workspace_take_effect(state_dir, reachable):
    """--task-user: tasks run as that uid and gid (not the default task user); --workspace: a task may take a cwd
    inside it and write there, a cwd outside it is refused before anything runs."""
    workspace = pathlib.Path(tempfile.mkdtemp(prefix="corral-workspace-", dir=reachable))
    os.chown(workspace, 65534, 65534)
    outside = pathlib.Path(tempfile.mkdtemp(prefix="corral-outside-", dir=reachable))
    try:
        async def scenario():
            async with mock_session(state_dir, "--task-user", "65534:65534", "--workspace", str(workspace)) as session:
                made = await call(session, "create_background_task", {
                    "title": "t", "goal": "g", "task_type": "command", "condition": {
                        "argv": ["/bin/sh", "-c", "id -u; id -g; echo made > made.txt"], "cwd": str(workspace)}})
                done = await call(session, "wait_for_background_task", {"task_id": made["task_id"], "timeout_ms": 10000})
                assert done["last_result"]["status"] == "completed", done
                output = await call(session, "get_task_output", {"task_id": made["task_id"]})
                assert output["text"].split() == ["65534", "65534"], output
                assert made["uid"] == 65534 and made["gid"] == 65534, made
                refused = await call(session, "create_background_task", {
                    "title": "t", "goal": "g", "task_type": "command",
                    "condition": {"argv": ["/bin/true"], "cwd": str(outside)}}, expect_error=True)
                assert "workspace" in refused.content[0].text, refused.content

        run(scenario())
        written = workspace / "made.txt"
        assert written.read_text() == "made\n" and written.stat().st_uid == 65534
        assert list(outside.iterdir()) == []
    finally:
        for directory in (workspace, outside):
            for entry in directory.iterdir():
                entry.unlink()
            directory.rmdir()
