"""The official `openai` Python package against a running bridge whose agent is `fake_claude`, or with
BRIDGE_AGENT=claude the real Claude Code against the project's mock model.

Run by tests/conformance/run.py with BRIDGE_URL (…/v1) and BRIDGE_KEY set and the pinned package on
PYTHONPATH. Prints one `ok - NAME` or `not ok - NAME: why` line per check.
"""

import os
import sys
import traceback

import openai

URL, KEY = os.environ["BRIDGE_URL"], os.environ["BRIDGE_KEY"]
# What the checks send and what comes back: fake_claude's commands, or the mock model's script (which
# answers "reply to: TEXT", one word per delta, and fails a request that starts with API_ERROR).
if os.environ.get("BRIDGE_AGENT") == "claude":
    REPLY = "reply to: hello from python"
    STREAM, STREAMED, PIECES = "one two three", "reply to: one two three", 5
    FAIL = "API_ERROR"
else:
    REPLY = "echo: hello from python"
    STREAM, STREAMED, PIECES = "stream one two three", "one two three", 3
    FAIL = "error"
# No retries: every request the checks send reaches the bridge exactly once.
client = openai.OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=30)


def ask(text, user="python-sdk", **kwargs):
    return client.chat.completions.create(
        model="claude", user=user, messages=[{"role": "user", "content": text}], **kwargs
    )


def completion():
    response = ask("hello from python")
    choice = response.choices[0]
    assert choice.message.role == "assistant", choice
    assert choice.message.content == REPLY, choice
    assert choice.finish_reason == "stop", choice
    assert response.model == "claude", response


def streaming():
    text, pieces, finish = "", 0, None
    for chunk in ask(STREAM, stream=True):
        choice = chunk.choices[0]
        if choice.delta.content:
            text += choice.delta.content
            pieces += 1
        finish = finish or choice.finish_reason
    assert text == STREAMED, text
    assert pieces == PIECES, f"{pieces} content deltas"
    assert finish == "stop", finish


def no_session_is_a_one_off_turn():
    # No `user`, no header: answered in a fresh conversation of its own (OpenClaw's background calls).
    response = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hello from python"}]
    )
    assert response.choices[0].message.content == REPLY, response
    assert response.choices[0].finish_reason == "stop", response


def wrong_key_is_authentication_error():
    wrong = openai.OpenAI(base_url=URL, api_key="sk-wrong", max_retries=0, timeout=30)
    try:
        wrong.chat.completions.create(
            model="claude", user="python-sdk", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
    except openai.AuthenticationError as err:
        assert err.status_code == 401, err
        assert "API key" in err.message, err.message
    else:
        raise AssertionError("no error for a wrong API key")


def agent_failure_is_status_error():
    try:
        ask(f"{FAIL} the workspace is on fire")
    except openai.APIStatusError as err:
        assert err.status_code == 502, err
        assert "the workspace is on fire" in err.message, err.message
    else:
        raise AssertionError("no error for a failed turn")


def agent_failure_mid_stream_raises():
    # Not the text of the check above: the same text again, right after it failed, would be taken as
    # the client's retry of it, which the agent carries on with.
    try:
        for _ in ask(f"{FAIL} the stream is on fire", stream=True):
            pass
    except openai.APIError as err:
        # Raised from the stream's final chunk: the response itself was a 200.
        assert not isinstance(err, openai.APIStatusError), err
        assert "the stream is on fire" in err.message, err.message
    else:
        raise AssertionError("the stream of a failed turn ended without an error")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def tool_round_trip():
    # The mock model calls the client's tools on `CALL …`; the bridge hands the calls over and goes on with
    # the results, in the same turn of Claude's.
    prompt = 'CALL get_weather {"city":"Paris"} ; get_weather {"city":"Oslo"}'
    messages = [{"role": "user", "content": prompt}]
    calls, finish = {}, None
    for chunk in client.chat.completions.create(
        model="claude", user="python-tools", messages=messages, tools=[WEATHER], stream=True
    ):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = call.id or entry["id"]
            entry["name"] += call.function.name or ""
            entry["arguments"] += call.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls", finish
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_weather"], calls
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
        for _, call in sorted(calls.items())
    ]})
    for (_, call), text in zip(sorted(calls.items()), ["sunny in Paris", "rain in Oslo"]):
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})
    response = client.chat.completions.create(
        model="claude", user="python-tools", messages=messages, tools=[WEATHER]
    )
    expected = f"reply to: {prompt} (tools said: sunny in Paris | rain in Oslo)"
    assert response.choices[0].message.content == expected, response

    # Not streamed: `message.tool_calls`.
    single = 'CALL get_weather {"city":"Rome"}'
    response = client.chat.completions.create(
        model="claude", user="python-tools-2", messages=[{"role": "user", "content": single}], tools=[WEATHER]
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and '"Rome"' in call.function.arguments, call
    response = client.chat.completions.create(
        model="claude", user="python-tools-2", tools=[WEATHER], messages=[
            {"role": "user", "content": single},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "hot in Rome"},
        ]
    )
    assert response.choices[0].message.content == f"reply to: {single} (tools said: hot in Rome)", response


CHECKS = [
    completion,
    streaming,
    no_session_is_a_one_off_turn,
    wrong_key_is_authentication_error,
    agent_failure_is_status_error,
    agent_failure_mid_stream_raises,
]

if os.environ.get("BRIDGE_AGENT") == "claude":
    CHECKS.append(tool_round_trip)

if __name__ == "__main__":
    failed = 0
    for check in CHECKS:
        try:
            check()
            print(f"ok - python {check.__name__}", flush=True)
        except Exception:  # a check's failure, whatever raised it, is reported and counted
            failed += 1
            why = traceback.format_exc().strip().replace("\n", "\n    ")
            print(f"not ok - python {check.__name__}:\n    {why}", flush=True)
    sys.exit(1 if failed else 0)
