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


CHECKS = [
    completion,
    streaming,
    no_session_is_a_one_off_turn,
    wrong_key_is_authentication_error,
    agent_failure_is_status_error,
    agent_failure_mid_stream_raises,
]

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
