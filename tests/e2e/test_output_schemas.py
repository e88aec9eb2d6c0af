"""Every tool publishes an outputSchema, and its real structuredContent satisfies it (tasks in every status)."""

import datetime

import jsonschema
import pytest

from conftest import call, mock_session, run


def test_every_tool_declares_an_output_schema_its_results_satisfy(state_dir):
    async def scenario():
        async with mock_session(state_dir) as session:
            tools = (await session.list_tools()).tools
            assert len(tools) == 26
            schemas = {}
            for tool in tools:
                schema = tool.output_schema
                assert schema is not None, f"{tool.name} has no outputSchema"
                assert schema["type"] == "object", tool.name
                jsonschema.Draft202012Validator.check_schema(schema)
                assert set(schema["required"]) <= set(schema["properties"]), tool.name
                assert schema.get("additionalProperties", True) is not False, tool.name
                schemas[tool.name] = schema
            covered = set()

            async def checked(tool, arguments=None):
                # The SDK validates too (and raises on a mismatch); this names the tool and the failing field.
                result = await call(session, tool, arguments)
                try:
                    jsonschema.validate(result, schemas[tool])
                except jsonschema.ValidationError as error:
                    pytest.fail(f"{tool}: structuredContent does not match its outputSchema at {error.json_path}: "
                                f"{error.message}")
                covered.add(tool)
                return result

            def command(title, condition, **extra):
                return checked("create_background_task",
                               {"title": title, "goal": title, "task_type": "command", "condition": condition, **extra})

            await checked("get_scheduler_time")
            await checked("list_background_tasks")

            # A long task through pause, the waiting marks, plans, artifacts and events, then cancelled.
            long = await command("long", {"argv": ["/bin/sleep", "30"]}, owner="e2e", tags=["a", "b"], notes="n",
                                 timeout_ms=60000, priority=7)
            task_id = long["task_id"]
            assert long["status"] == "running"
            await checked("get_background_task", {"task_id": task_id})
            assert (await checked("pause_background_task", {"task_id": task_id, "reason": "e2e"}))["status"] == "paused"
            assert "note" in await checked("pause_background_task", {"task_id": task_id})
            await checked("summarize_background_task", {"task_id": task_id})
            await checked("get_task_handoff", {"task_id": task_id})
            assert (await checked("list_background_tasks", {"statuses": ["paused"]}))["count"] == 1
            early = await checked("wait_for_background_task", {"task_id": task_id, "timeout_ms": 100})
            assert early["condition_met"] is False
            await checked("resume_background_task", {"task_id": task_id})
            assert "note" in await checked("resume_background_task", {"task_id": task_id})
            await checked("create_task_plan", {"task_id": task_id, "steps": ["one", "two", "three"]})
            await checked("update_task_step", {"task_id": task_id, "step_index": 1, "status": "completed", "note": "ok"})
            await checked("update_task_step", {"task_id": task_id, "step_index": 2, "status": "in_progress"})
            await checked("record_task_artifact", {"task_id": task_id, "path": "/etc/hostname", "description": "d"})
            await checked("record_task_artifact", {"task_id": task_id, "path": "/nonexistent/artifact"})
            await checked("append_task_event", {"task_id": task_id, "message": "plain"})
            await checked("append_task_event",
                          {"task_id": task_id, "message": "data", "event_type": "progress", "data": {"n": [1, 2]}})
            await checked("summarize_background_task", {"task_id": task_id, "include_recent_events": 3})
            await checked("get_task_handoff", {"task_id": task_id})
            marked = await checked("mark_task_waiting_for_user", {"task_id": task_id, "question": "go on?"})
            assert marked["status"] == "waiting_for_user"
            await checked("get_task_handoff", {"task_id": task_id})
            marked = await checked("mark_task_waiting_for_condition", {"task_id": task_id, "note": "disk"})
            assert marked["status"] == "waiting_for_condition"
            await checked("get_scheduler_time")
            events = await checked("list_task_events", {"task_id": task_id, "limit": 2})
            await checked("list_task_events", {"task_id": task_id, "since": events["next_since"]})
            assert (await checked("list_task_events", {"task_id": task_id, "limit": 0}))["next_since"] is None
            await checked("get_task_output", {"task_id": task_id})
            assert (await checked("cancel_background_task", {"task_id": task_id}))["status"] == "cancelled"
            assert "note" in await checked("cancel_background_task", {"task_id": task_id})
            assert "note" in await checked("mark_task_waiting_for_user", {"task_id": task_id, "question": "q"})
            assert "note" in await checked("mark_task_waiting_for_condition", {"task_id": task_id, "note": "n"})
            await checked("get_task_handoff", {"task_id": task_id, "include_recent_events": 0})

            # Completed, failed (with output on both streams), failed to start, and sleeping tasks.
            done = await command("true", {"argv": ["/bin/true"]})
            waited = await checked("wait_for_background_task", {"task_id": done["task_id"], "timeout_ms": 10000})
            assert waited["condition_met"] is True and waited["last_result"]["status"] == "completed"
            await checked("get_task_handoff", {"task_id": done["task_id"]})
            failed = await command("false", {"command": "echo out; echo err >&2; false"})
            waited = await checked("wait_for_background_task", {"task_id": failed["task_id"], "timeout_ms": 10000})
            assert waited["last_result"]["status"] == "failed"
            await checked("summarize_background_task", {"task_id": failed["task_id"]})
            await checked("get_task_handoff", {"task_id": failed["task_id"]})
            assert (await checked("get_task_output", {"task_id": failed["task_id"], "stream": "stderr"}))["text"] == "err\n"
            assert (await checked("get_task_output", {"task_id": failed["task_id"], "tail_bytes": 2}))["text"] == "t\n"
            assert (await checked("get_task_output", {"task_id": failed["task_id"], "offset": 1}))["text"] == "ut\n"
            unstarted = await command("missing", {"argv": ["/nonexistent/program"]})
            assert unstarted["status"] == "failed" and unstarted["pid"] is None
            await checked("get_task_handoff", {"task_id": unstarted["task_id"]})
            nap = await checked("create_background_task",
                                {"title": "nap", "goal": "sleep", "task_type": "sleep", "condition": {"duration_ms": 200}})
            await checked("wait_for_background_task", {"task_id": nap["task_id"], "timeout_ms": 10000})
            wake_at = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(milliseconds=300)).isoformat()
            wake = await checked("create_background_task",
                                 {"title": "wake", "goal": "wake_at", "task_type": "sleep", "condition": {"wake_at": wake_at}})
            await checked("wait_for_background_task", {"task_id": wake["task_id"], "timeout_ms": 10000})
            listed = await checked("list_background_tasks", {"statuses": ["completed", "failed"], "limit": 2})
            assert listed["count"] == 2 and listed["total_count"] >= 4
            await checked("get_scheduler_time")

            # The wait tools, met, timed out and fatal; and watcher tasks running, met and timed out.
            await checked("wait", {"duration_ms": 5, "reason": "e2e"})
            await checked("wait_until", {"timestamp": "2020-01-01T00:00:00Z"})
            assert (await checked("wait_for_file", {"path": "/etc/hostname"}))["ok"] is True
            assert (await checked("wait_for_file", {"path": "/nonexistent/x", "timeout_ms": 0}))["ok"] is False
            assert (await checked("wait_for_process", {"name": "no-such-process-name", "state": "exited"}))["ok"]
            assert (await checked("wait_for_port", {"host": "127.0.0.1", "port": 1, "timeout_ms": 0}))["ok"] is False
            assert (await checked("wait_for_http", {"url": "http://127.0.0.1:1/", "timeout_ms": 0}))["ok"] is False
            assert (await checked("wait_for_window", {"title_filter": "x"}))["fatal_error"] is True
            assert (await checked("wait_for_desktop_change", {}))["fatal_error"] is True
            watcher = await checked("create_background_task", {
                "title": "watch", "goal": "file", "task_type": "wait_file",
                "condition": {"path": "/nonexistent/never"}, "poll_interval_ms": 100})
            assert watcher["status"] == "waiting_for_condition"
            await checked("get_background_task", {"task_id": watcher["task_id"]})
            await checked("list_background_tasks", {"statuses": ["waiting_for_condition"]})
            await checked("cancel_background_task", {"task_id": watcher["task_id"]})
            met = await checked("create_background_task", {
                "title": "watch", "goal": "port", "task_type": "wait_port",
                "condition": {"host": "127.0.0.1", "port": 1, "state": "closed"}})
            done = await checked("wait_for_background_task", {"task_id": met["task_id"], "timeout_ms": 10000})
            assert done["last_result"]["status"] == "completed"
            await checked("get_task_handoff", {"task_id": met["task_id"]})

            assert covered == set(schemas), f"not exercised: {sorted(set(schemas) - covered)}"

    run(scenario())
