"""Several `corral proxy --http` instances on one PostgreSQL store, in front of one allcanuse-mock: exact shared
limits (also across restarts), bearer tokens mapped to grants, an approval honoured once across instances, task
handles usable through any instance by their grant only, and fail-closed denials while the database is down.

Each test gets a throwaway PostgreSQL cluster's fresh database, its own mock (over HTTP) and its own proxies."""

import concurrent.futures
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest

from conftest import BIN_DIR, MOCK, listening
from pg_cluster import Cluster
from raw_client import MODERN, meta, post

CORRAL = BIN_DIR / "corral"
TOKENS = {"team-a": "token-of-team-a-" + "a" * 16, "team-b": "token-of-team-b-" + "b" * 16}


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="corral-pg-", dir="/var/tmp")
    cluster = Cluster(os.path.join(root, "cluster"))
    cluster.create()
    cluster.start()
    yield cluster
    cluster.destroy()
    os.rmdir(root)


@pytest.fixture
def database(cluster):
    name = "scale_" + uuid.uuid4().hex[:12]
    cluster.sql(f"CREATE DATABASE {name}")
    return cluster.url.replace("/postgres?", f"/{name}?")


@pytest.fixture
def setup(tmp_path, state_dir):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "version": "1", "default": "allow",
        "tools": {
            "list_background_tasks": {"limits": [{"counter": "lists", "window": "day", "max": 10, "scope": "grant"}]},
            "append_task_event": {"action": "require_approval", "reason": "Events are visible to the whole team"},
        },
    }))
    grants = tmp_path / "grants.json"
    grants.write_text(json.dumps({"grants": [
        {"id": grant, "token_sha256": hashlib.sha256(token.encode()).hexdigest()} for grant, token in TOKENS.items()]}))
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    return {"policy": policy, "grants": grants, "secret": secret, "state_dir": state_dir, "tmp": tmp_path}


def mock_calls(setup):
    path = setup["tmp"] / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def mock(setup):
    return listening([str(MOCK), "--http", "127.0.0.1:0", "--state-dir", setup["state_dir"], "--grace-ms", "300",
                      "--call-log", str(setup["tmp"] / "calls.jsonl")], "allcanuse-mock")


def proxy_argv(setup, upstream, store, instance, *extra):
    return [str(CORRAL), "proxy", "--http", "127.0.0.1:0", "--policy", str(setup["policy"]), "--grants",
            str(setup["grants"]), "--store", store, "--approval-secret-file", str(setup["secret"]),
            "--audit", str(setup["tmp"] / f"audit-{instance}.jsonl"), "--instance-id", instance, *extra,
            "--upstream-url", upstream]


def authorized(token, headers=None):
    return {**(headers or {}), "Authorization": f"Bearer {token}"}


_ids = itertools.count(1)


def modern(url, token, method, params, tasks=False, name=None):
    """A 2026-07-28 request with its headers; returns (status, answer)."""
    message = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": {**params, "_meta": meta(tasks=tasks)}}
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    status, _, answer = post(url, message, headers=authorized(token, headers), timeout=30)
    return status, answer


def call(url, token, tool, arguments, **extra):
    status, answer = modern(url, token, "tools/call", {"name": tool, "arguments": arguments, **extra}, name=tool)
    assert status == 200, (status, answer)
    return answer["result"]


def denied(result):
    return result.get("isError") and result["content"][0]["text"].startswith("[POLICY DENIED]")


class Proxies:
    """N proxy instances; `restart` stops every one (SIGTERM, status 0) and starts them again."""

    def __init__(self, setup, upstream, store, count, *extra):
        self.args = [(setup, upstream, store, f"i{n}", *extra) for n in range(count)]
        self.running = []
        self.urls = []

    def __enter__(self):
        self.start()
        return self

    def start(self):
        for args in self.args:
            context = listening(proxy_argv(*args), "corral proxy")
            self.urls.append(context.__enter__())
            self.running.append(context)

    def stop(self):
        for context in self.running:
            context.__exit__(None, None, None)
        self.running, self.urls = [], []

    def restart(self):
        self.stop()
        self.start()

    def __exit__(self, *exc):
        self.stop()


def hammer(urls, token, clients=16, calls_each=3):
    """`clients` concurrent clients, each sending `calls_each` list calls round-robin over the instances; returns
    how many were allowed."""
    def client(index):
        allowed = 0
        for n in range(calls_each):
            url = urls[(index + n) % len(urls)]
            result = call(url, token, "list_background_tasks", {"limit": 1})
            allowed += 0 if denied(result) else 1
        return allowed

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client, range(clients)))


def test_three_instances_keep_one_exact_limit_across_restarts_and_grants(setup, database):
    with mock(setup) as upstream, Proxies(setup, upstream, database, 3) as proxies:
        assert hammer(proxies.urls, TOKENS["team-a"]) == 10
        assert [c["tool"] for c in mock_calls(setup)] == ["list_background_tasks"] * 10
        proxies.restart()  # every instance, inside the window: nothing is forgotten
        assert hammer(proxies.urls, TOKENS["team-a"]) == 0
        assert hammer(proxies.urls, TOKENS["team-b"]) == 10, "another token is another grant, with its own counter"
        assert len(mock_calls(setup)) == 20
    lines = [json.loads(line) for n in range(3) for line in (setup["tmp"] / f"audit-i{n}.jsonl").read_text().splitlines()]
    assert {line["instance"] for line in lines} == {"i0", "i1", "i2"}, "one audit stream per instance, each line says which"
    assert sum(line["decision"] == "allow" for line in lines) == 20
    assert {line["grant"] for line in lines} == {"team-a", "team-b"}
    for n in range(3):
        assert {json.loads(line)["instance"] for line in (setup["tmp"] / f"audit-i{n}.jsonl").read_text().splitlines()} == {f"i{n}"}


def test_no_token_or_a_wrong_one_is_401_and_reaches_nothing(setup, database):
    with mock(setup) as upstream, Proxies(setup, upstream, database, 1) as proxies:
        url = proxies.urls[0]
        message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "list_background_tasks", "arguments": {}, "_meta": meta()}}
        headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "list_background_tasks"}
        for authorization in [None, "Bearer wrong-token", "Basic dGVhbS1hOnNlY3JldA==", "Bearer ", "bearer"]:
            extra = dict(headers)
            if authorization is not None:
                extra["Authorization"] = authorization
            status, answer_headers, answer = post(url, message, headers=extra)
            assert status == 401, (authorization, status, answer)
            assert answer_headers.get("WWW-Authenticate", "").startswith('Bearer realm="corral-proxy"'), answer_headers
            assert answer["error"]["code"] == -32001
        # A legacy initialize without a token opens no session either.
        status, _, _ = post(url, {"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}})
        assert status == 401
        # With the right token the same request goes through.
        assert not denied(call(url, TOKENS["team-a"], "list_background_tasks", {}))
    assert [c["tool"] for c in mock_calls(setup)] == ["list_background_tasks"]
    lines = (setup["tmp"] / "audit-i0.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["grant"] == "team-a", "refused requests never reached the policy"


def test_a_stopped_database_denies_then_the_proxy_recovers_by_itself(setup, database, cluster):
    with mock(setup) as upstream, Proxies(setup, upstream, database, 2) as proxies:
        token = TOKENS["team-a"]
        assert not denied(call(proxies.urls[0], token, "list_background_tasks", {}))
        cluster.stop()
        try:
            for url in proxies.urls:
                started = time.monotonic()
                result = call(url, token, "list_background_tasks", {})
                assert denied(result), result
                assert "policy store unavailable" in result["content"][0]["text"], result
                assert time.monotonic() - started < 10, "a denial comes within the store's deadline"
            # A tool without a counter does not need the store.
            assert not denied(call(proxies.urls[1], token, "get_scheduler_time", {}))
        finally:
            cluster.start()
        deadline = time.monotonic() + 30
        while True:
            result = call(proxies.urls[1], token, "list_background_tasks", {})
            if not denied(result):
                break
            assert time.monotonic() < deadline, f"no recovery: {result}"
            time.sleep(0.5)
    tools = [c["tool"] for c in mock_calls(setup)]
    assert tools.count("list_background_tasks") == 2, "nothing was allowed while the store was down"


def test_store_fail_open_allows_uncounted_and_audits_it_while_the_database_is_down(setup, database, cluster):
    """--store-fail-open: while the store cannot be reached a counted call is allowed, uncounted, and its audit line
    says so (rule policy_store_fail_open); once the store is back, counting resumes."""
    with mock(setup) as upstream, Proxies(setup, upstream, database, 1, "--store-fail-open") as proxies:
        token = TOKENS["team-a"]
        url = proxies.urls[0]
        assert not denied(call(url, token, "list_background_tasks", {}))
        cluster.stop()
        try:
            result = call(url, token, "list_background_tasks", {})
            assert not denied(result), result
        finally:
            cluster.start()
        deadline = time.monotonic() + 30
        while True:
            result = call(url, token, "list_background_tasks", {})
            assert not denied(result), result
            last = json.loads((setup["tmp"] / "audit-i0.jsonl").read_text().splitlines()[-1])
            if last["rule"] != "policy_store_fail_open":
                break
            assert time.monotonic() < deadline, "the store never came back into use"
            time.sleep(0.5)
    rules = [json.loads(line)["rule"] for line in (setup["tmp"] / "audit-i0.jsonl").read_text().splitlines()]
    assert rules[0] != "policy_store_fail_open" and rules[1] == "policy_store_fail_open", rules
    assert rules[-1] != "policy_store_fail_open", rules
    assert [c["tool"] for c in mock_calls(setup)].count("list_background_tasks") == len(rules)


def test_an_approval_accepted_on_one_instance_cannot_be_replayed_on_another(setup, database):
    with mock(setup) as upstream, Proxies(setup, upstream, database, 2) as proxies:
        a, b = proxies.urls
        token = TOKENS["team-a"]
        task = call(a, token, "create_background_task",
                    {"title": "t", "goal": "g", "task_type": "sleep", "condition": {"duration_ms": 30000}})
        arguments = {"task_id": task["structuredContent"]["task_id"], "message": "deploying"}
        elicit = {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}

        def approval_call(url, state=None):
            params = {"name": "append_task_event", "arguments": arguments, "_meta": elicit}
            if state is not None:
                params["requestState"] = state
                params["inputResponses"] = {"corral-approval": {"action": "accept", "content": {}}}
            message = {"jsonrpc": "2.0", "id": next(_ids), "method": "tools/call", "params": params}
            status, _, answer = post(url, message, headers=authorized(token, {
                "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "append_task_event"}))
            assert status == 200, answer
            return answer["result"]

        asked = approval_call(a)
        assert asked["resultType"] == "input_required"
        state = asked["requestState"]
        accepted = approval_call(a, state)
        assert not accepted.get("isError"), accepted
        replayed = approval_call(b, state)
        assert denied(replayed) and "already used" in replayed["content"][0]["text"], replayed
        # The other instance honours a fresh state of the first (they share the secret): the refusal was the replay.
        fresh = approval_call(a)["requestState"]
        assert not approval_call(b, fresh).get("isError")
    assert [c["tool"] for c in mock_calls(setup)].count("append_task_event") == 2


def test_a_task_handle_made_through_one_instance_is_usable_through_another_by_its_grant_only(setup, database):
    with mock(setup) as upstream, Proxies(setup, upstream, database, 2) as proxies:
        a, b = proxies.urls
        status, answer = modern(a, TOKENS["team-a"], "tools/call",
                                {"name": "wait", "arguments": {"duration_ms": 200}}, tasks=True, name="wait")
        assert status == 200 and answer["result"]["resultType"] == "task", answer
        handle = answer["result"]["taskId"]
        status, mine = modern(b, TOKENS["team-a"], "tasks/get", {"taskId": handle}, tasks=True, name=handle)
        assert status == 200 and mine["result"]["taskId"] == handle, mine
        status, theirs = modern(b, TOKENS["team-b"], "tasks/get", {"taskId": handle}, tasks=True, name=handle)
        assert theirs["error"]["code"] == -32602 and "refused by corral" in theirs["error"]["message"], theirs
    gets = [c for c in mock_calls(setup) if c.get("method") == "tasks/get"]
    assert len(gets) == 1, "only the owner's tasks/get reached the mock"


def test_metrics_report_decisions_store_and_upstream(setup, database):
    with mock(setup) as upstream:
        process = subprocess.Popen(proxy_argv(setup, upstream, database, "m", "--metrics", "127.0.0.1:0"),
                                   stderr=subprocess.PIPE, text=True)
        try:
            url = metrics = None
            for line in process.stderr:
                url = url or (re.search(r"listening on (http://\S+)", line) or [None, None])[1]
                metrics = metrics or (re.search(r"metrics on (http://\S+)", line) or [None, None])[1]
                if url and metrics:
                    break
            assert url and metrics
            for _ in range(12):
                call(url, TOKENS["team-a"], "list_background_tasks", {})
            # A method the client makes up is counted, but under no name of its choosing.
            for invented in ("tasks/invented-1", "tasks/invented-2"):
                modern(url, TOKENS["team-a"], invented, {"taskId": "none"}, tasks=True, name="none")
            text = urllib.request.urlopen(metrics, timeout=10).read().decode()
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
    allowed = re.search(r'corral_decisions_total\{[^}]*decision="allow"[^}]*tool="list_background_tasks"[^}]*\} (\d+)', text) \
        or re.search(r'corral_decisions_total\{[^}]*tool="list_background_tasks"[^}]*decision="allow"[^}]*\} (\d+)', text)
    assert allowed and int(allowed[1]) == 10, text
    assert re.search(r'corral_decisions_total\{[^}]*decision="deny"[^}]*\} 2', text), text
    assert re.search(r'corral_store_seconds_count\{operation="reserve"\} 12', text), text
    assert re.search(r'corral_upstream_seconds_count\{outcome="result"\} 10', text), text
    assert re.search(r'corral_decision_seconds_count 12', text), text
    assert re.search(r'corral_task_requests_total\{[^}]*method="\(other\)"[^}]*\} 2', text), text
    assert "invented" not in text, text


@pytest.mark.parametrize("extra, message", [
    (["--store", "postgres://nobody"], "not a PostgreSQL URL: no USER@"),
    (["--store", "redis://x@y/z"], "--store must be memory, sqlite:PATH or postgres://"),
    (["--store", "postgres://corral@127.0.0.1:1/postgres?sslmode=disable"], "Connection refused"),
    (["--grants", "/nonexistent/grants.json"], "cannot be read"),
])
def test_bad_store_and_grants_arguments_are_clear_errors(setup, extra, message):
    argv = [str(CORRAL), "proxy", "--http", "127.0.0.1:0", "--policy", str(setup["policy"]), *extra, "--", str(MOCK)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and message in done.stderr, done.stderr


@pytest.mark.parametrize("entries, message", [
    ([{"id": "a", "token_sha256": "abc"}], "must be 64 hex digits"),
    ([{"id": "a", "token_sha256": "z" * 64}], "must be 64 hex digits"),
    ([{"id": "a", "token_sha256": "a" * 64}, {"id": "b", "token_sha256": "A" * 64}], 'the same token as grant "a"'),
    ([{"id": "a", "token": "secret"}], 'unknown key "token"'),
    ([{"token_sha256": "a" * 64}], "grants[0].id must be a non-empty string"),
])
def test_bad_grants_files_name_the_problem(setup, entries, message):
    setup["grants"].write_text(json.dumps({"grants": entries}))
    argv = [str(CORRAL), "proxy", "--http", "127.0.0.1:0", "--policy", str(setup["policy"]), "--grants",
            str(setup["grants"]), "--", str(MOCK)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    check = subprocess.run([str(CORRAL), "grants", "check", str(setup["grants"])], capture_output=True, text=True)
    assert check.returncode == 1 and message in check.stderr


def test_grants_hash_prints_what_the_file_holds(setup):
    done = subprocess.run([str(CORRAL), "grants", "hash", "--id", "team-a"], input=TOKENS["team-a"] + "\n",
                          capture_output=True, text=True, check=True)
    entry = json.loads(done.stdout)
    assert entry == {"id": "team-a", "token_sha256": hashlib.sha256(TOKENS["team-a"].encode()).hexdigest()}
    check = subprocess.run([str(CORRAL), "grants", "check", str(setup["grants"])], capture_output=True, text=True)
    assert check.returncode == 0 and "team-a, team-b" in check.stdout


def test_a_stdio_proxy_keeps_stdout_for_mcp_when_the_store_goes_away(setup, database, cluster):
    """The store's own messages (lost, back) go to stderr: on stdio, stdout is the client's MCP stream."""
    process = subprocess.Popen(
        [str(CORRAL), "proxy", "--policy", str(setup["policy"]), "--store", database, "--",
         str(MOCK), "--state-dir", setup["state_dir"], "--grace-ms", "300"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def ask(request_id):
        process.stdin.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {
            "name": "list_background_tasks", "arguments": {}, "_meta": meta()}}) + "\n")
        process.stdin.flush()
        answer = json.loads(process.stdout.readline())  # a log line here would not parse
        assert answer["id"] == request_id, answer
        return answer["result"]

    try:
        assert not denied(ask(1))
        cluster.stop()
        try:
            assert denied(ask(2)) and "policy store unavailable" in ask(3)["content"][0]["text"]
        finally:
            cluster.start()
        deadline = time.monotonic() + 30
        request_id = 4
        while denied(ask(request_id)):
            assert time.monotonic() < deadline, "no recovery"
            request_id += 1
            time.sleep(0.5)
    finally:
        rest, errors = process.communicate(timeout=20)  # closes the proxy's stdin: it and its server end
    assert all(json.loads(line) for line in rest.splitlines() if line.strip())
    assert "unavailable" in errors and "reachable again" in errors, errors


def test_grants_are_reloaded_when_their_file_changes_and_a_bad_file_keeps_the_old_ones(setup):
    """--grants is reloaded every --reload-interval-ms: a token added to the file works without a restart, a token
    taken out stops working, and a file that does not parse keeps the grants in force."""
    newcomer = "token-of-team-c-" + "c" * 16

    def write(grants):
        setup["grants"].write_text(json.dumps({"grants": [
            {"id": grant, "token_sha256": hashlib.sha256(token.encode()).hexdigest()} for grant, token in grants]}))

    def status_of(url, token):
        return modern(url, token, "tools/call", {"name": "get_scheduler_time", "arguments": {}},
                      name="get_scheduler_time")[0]

    def eventually(url, token, expected):
        deadline = time.monotonic() + 10
        while status_of(url, token) != expected:
            assert time.monotonic() < deadline, f"{token[:14]}… never got {expected}"
            time.sleep(0.1)

    with mock(setup) as upstream, Proxies(setup, upstream, "memory", 1, "--reload-interval-ms", "100") as proxies:
        url = proxies.urls[0]
        assert status_of(url, TOKENS["team-a"]) == 200
        assert status_of(url, newcomer) == 401
        write([("team-a", TOKENS["team-a"]), ("team-c", newcomer)])
        eventually(url, newcomer, 200)
        setup["grants"].write_text("{not json")
        time.sleep(0.5)
        assert status_of(url, newcomer) == 200 and status_of(url, TOKENS["team-a"]) == 200
        write([("team-c", newcomer)])
        eventually(url, TOKENS["team-a"], 401)
        assert status_of(url, newcomer) == 200


def test_a_sqlite_store_gives_proxies_on_one_machine_exact_shared_counters(setup, tmp_path):
    """--store sqlite:PATH: two proxy instances on one file share their counters exactly (10 a day for the grant,
    however the calls are spread), and the count outlives a restart of both."""
    store = f"sqlite:{tmp_path / 'counters.sqlite'}"
    with mock(setup) as upstream:
        with Proxies(setup, upstream, store, 2) as proxies:
            allowed = [not denied(call(proxies.urls[n % 2], TOKENS["team-a"], "list_background_tasks", {}))
                       for n in range(7)]
            assert all(allowed), allowed
            proxies.restart()
            allowed = [not denied(call(proxies.urls[n % 2], TOKENS["team-a"], "list_background_tasks", {}))
                       for n in range(5)]
            assert allowed == [True, True, True, False, False], allowed
            assert not denied(call(proxies.urls[1], TOKENS["team-b"], "list_background_tasks", {})), "another grant"
    assert [c["tool"] for c in mock_calls(setup)].count("list_background_tasks") == 11
