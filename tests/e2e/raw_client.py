"""A raw JSON-RPC client over the mock's stdio (no SDK in between): what a gateway or a hand-written agent sends."""

import json
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request

from conftest import MOCK, wait_for_task_output

MODERN = "2026-07-28"
TASKS = "io.modelcontextprotocol/tasks"


def meta(tasks=False):
    capabilities = {"extensions": {TASKS: {}}} if tasks else {}
    return {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "raw-e2e", "version": "1"}}


def modern_request(request_id, method, params=None, tasks=False):
    """A 2026-07-28 request: `params` with the protocol's `_meta` added (keys of a `_meta` in `params` win)."""
    params = dict(params or {})
    params["_meta"] = {**meta(tasks), **params.get("_meta", {})}
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def write_modern(stream, request_id, method, params=None):
    """Writes a 2026-07-28 request line to a server's stdin (a text stream) at once."""
    stream.write(json.dumps(modern_request(request_id, method, params)) + "\n")
    stream.flush()


def stop_reading_then_create(server, state_dir, text, flood=30):
    """The client of `server` (a Popen with text pipes) closes its end of stdout, sends `flood` tools/list (95 KB
    answers to nobody) and a create of a task that prints `text`; returns the task output files that hold it."""
    server.stdout.close()
    for request_id in range(1000, 1000 + flood):
        write_modern(server.stdin, request_id, "tools/list")
    write_modern(server.stdin, 1000 + flood, "tools/call", {"name": "create_background_task", "arguments": {
        "title": "after", "goal": "g", "task_type": "command", "condition": {"argv": ["/bin/echo", text]}}})
    return wait_for_task_output(state_dir, text, server)


class RawStdio:
    """The mock as a child process; answers are collected by id, notifications in order."""

    def __init__(self, state_dir, *extra_args, command=None):
        """`command`: another server command (a gateway in front of the mock, say) instead of the mock itself."""
        argv = command or [str(MOCK), "--state-dir", state_dir, "--grace-ms", "300", *extra_args]
        self.process = subprocess.Popen(argv,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, bufsize=1)
        self.answers = {}
        self.notifications = queue.Queue()
        self.lock = threading.Condition()
        self.next_id = 1
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            message = json.loads(line)
            if "id" in message and "method" not in message:
                with self.lock:
                    self.answers[message["id"]] = message
                    self.lock.notify_all()
            else:
                self.notifications.put(message)

    def send(self, message):
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def start(self, method, params=None, tasks=False):
        """Sends a modern request; returns its id."""
        request_id = self.next_id
        self.next_id += 1
        self.send(modern_request(request_id, method, params, tasks))
        return request_id

    def answer(self, request_id, timeout=30):
        deadline = time.monotonic() + timeout
        with self.lock:
            while request_id not in self.answers:
                left = deadline - time.monotonic()
                assert left > 0, f"no answer to request {request_id} within {timeout} s"
                self.lock.wait(left)
            return self.answers.pop(request_id)

    def has_answer(self, request_id):
        with self.lock:
            return request_id in self.answers

    def request(self, method, params=None, tasks=False, timeout=30):
        return self.answer(self.start(method, params, tasks), timeout)

    def call(self, tool, arguments=None, tasks=False, timeout=30):
        """tools/call; returns the result (which must not be a JSON-RPC error)."""
        answer = self.request("tools/call", {"name": tool, "arguments": arguments or {}}, tasks, timeout)
        assert "result" in answer, answer
        return answer["result"]

    def cancel(self, request_id):
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": request_id, "reason": "e2e", "_meta": meta()}})

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def post(url, message, headers=None, raw=None, timeout=20):
    """POSTs one message over HTTP (`raw`: a body as given); returns (status, headers, parsed answer or None): the
    JSON body, or the last event of an SSE stream."""
    body = raw if raw is not None else json.dumps(message).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(headers or {}),
    })
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer_headers, text = response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        status, answer_headers, text = error.code, dict(error.headers), error.read().decode()
    if not text:
        return status, answer_headers, None
    if answer_headers.get("Content-Type", "").startswith("text/event-stream"):
        events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
        return status, answer_headers, events[-1]
    return status, answer_headers, json.loads(text)
