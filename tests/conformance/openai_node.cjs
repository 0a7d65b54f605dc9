// The official `openai` npm package against a running bridge whose agent is `fake_claude`, or with
// BRIDGE_AGENT=claude the real Claude Code against the project's mock model.
//
// Run by tests/conformance/run.py with BRIDGE_URL (…/v1) and BRIDGE_KEY set and the pinned package on
// NODE_PATH. Prints one `ok - NAME` or `not ok - NAME: why` line per check.
'use strict';

const assert = require('node:assert/strict');
const OpenAI = require('openai');

const { BRIDGE_URL: baseURL, BRIDGE_KEY: apiKey } = process.env;
// What the checks send and what comes back: fake_claude's commands, or the mock model's script (which
// answers "reply to: TEXT", one word per delta, and fails a request that starts with API_ERROR).
const script =
  process.env.BRIDGE_AGENT === 'claude'
    ? { reply: 'reply to: hello from node', stream: 'one two three', streamed: 'reply to: one two three', pieces: 5, fail: 'API_ERROR' }
    : { reply: 'echo: hello from node', stream: 'stream one two three', streamed: 'one two three', pieces: 3, fail: 'error' };
// No retries: every request the checks send reaches the bridge exactly once.
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });

const ask = (content, extra = {}) =>
  client.chat.completions.create({
    model: 'claude',
    user: 'node-sdk',
    messages: [{ role: 'user', content }],
    ...extra,
  });

// Runs `request` and returns what it threw, failing if it did not throw.
async function thrown(request) {
  try {
    await request();
  } catch (err) {
    return err;
  }
  assert.fail('no error');
}

const checks = {
  async completion() {
    const response = await ask('hello from node');
    const [choice] = response.choices;
    assert.equal(choice.message.role, 'assistant');
    assert.equal(choice.message.content, script.reply);
    assert.equal(choice.finish_reason, 'stop');
    assert.equal(response.model, 'claude');
  },

  async streaming() {
    let text = '';
    let pieces = 0;
    let finish = null;
    for await (const chunk of await ask(script.stream, { stream: true })) {
      const [choice] = chunk.choices;
      if (choice.delta.content) {
        text += choice.delta.content;
        pieces += 1;
      }
      finish ??= choice.finish_reason;
    }
    assert.equal(text, script.streamed);
    assert.equal(pieces, script.pieces, 'each word the agent sent is its own delta');
    assert.equal(finish, 'stop');
  },

  async no_session_is_a_one_off_turn() {
    // No `user`, no header: answered in a fresh conversation of its own (OpenClaw's background calls).
    const response = await client.chat.completions.create({
      model: 'claude',
      messages: [{ role: 'user', content: 'hello from node' }],
    });
    assert.equal(response.choices[0].message.content, script.reply);
  },

  async wrong_key_is_authentication_error() {
    const wrong = new OpenAI({ baseURL, apiKey: 'sk-wrong', maxRetries: 0, timeout: 30_000 });
    const err = await thrown(() =>
      wrong.chat.completions.create({
        model: 'claude',
        user: 'node-sdk',
        stream: true,
        messages: [{ role: 'user', content: 'hi' }],
      }),
    );
    assert.ok(err instanceof OpenAI.AuthenticationError, String(err));
    assert.equal(err.status, 401);
    assert.match(err.message, /API key/);
  },

  async agent_failure_is_status_error() {
    const err = await thrown(() => ask(`${script.fail} the workspace is on fire`));
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.equal(err.status, 502);
    assert.match(err.message, /the workspace is on fire/);
  },

  // Not the text of the check above: the same text again, right after it failed, would be taken as the
  // client's retry of it, which the agent carries on with.
  async agent_failure_mid_stream_raises() {
    const err = await thrown(async () => {
      for await (const _ of await ask(`${script.fail} the stream is on fire`, { stream: true })) {
        // read to the end
      }
    });
    assert.ok(err instanceof OpenAI.APIError, String(err));
    // Thrown from the stream's final chunk: the response itself was a 200.
    assert.equal(err.status, undefined);
    assert.match(err.message, /the stream is on fire/);
  },
};

// The client's tools: with the real Claude Code (stream-json), whose mock model calls them on `CALL …`.
const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

if (process.env.BRIDGE_AGENT === 'claude') {
  checks.toolRoundTrip = async () => {
    const prompt = 'CALL get_weather {"city":"Paris"} ; get_weather {"city":"Oslo"}';
    const messages = [{ role: 'user', content: prompt }];
    const request = { model: 'claude', user: 'node-tools', tools: [WEATHER], messages };
    // Streamed: the SDK's own accumulation of tool-call deltas.
    const stream = client.chat.completions.stream(request);
    const streamed = await stream.finalChatCompletion();
    const choice = streamed.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    const calls = choice.message.tool_calls;
    assert.equal(calls.length, 2);
    assert.deepEqual(JSON.parse(calls[1].function.arguments), { city: 'Oslo' });
    messages.push({ role: 'assistant', content: null, tool_calls: calls });
    messages.push({ role: 'tool', tool_call_id: calls[0].id, content: 'sunny in Paris' });
    messages.push({ role: 'tool', tool_call_id: calls[1].id, content: 'error: no weather service for Oslo' });
    const answer = await client.chat.completions.create(request);
    assert.equal(
      answer.choices[0].message.content,
      `reply to: ${prompt} (tools said: sunny in Paris | error: no weather service for Oslo)`,
    );
  };
}

(async () => {
  let failed = 0;
  for (const [name, check] of Object.entries(checks)) {
    try {
      await check();
      console.log(`ok - node ${name}`);
    } catch (err) {
      failed += 1;
      console.log(`not ok - node ${name}:\n    ${String(err.stack ?? err).replaceAll('\n', '\n    ')}`);
    }
  }
  process.exitCode = failed ? 1 : 0;
})();
