"""Conformance with real clients, end to end.

Starts the real `bridge` binary on 127.0.0.1 with `fake_claude` as its agent (one real process per
session, a real WebSocket, real HTTP), then runs, one after another:

- the official `openai` packages for Python and Node (tests/conformance/openai_python.py, openai_node.cjs);
- OpenClaw, with the bridge as its provider: `agent exec`, sessions over several invocations, a new
  conversation in a session, `localService` (OpenClaw starts and stops the bridge), and a provider timeout
  shorter than the agent's silence.

Then the same SDK checks and OpenClaw's turns again against `--claude-mode stream-json`, whose agent is
the real, pinned Claude Code (`claude -p` on pipes) and whose model is the project's mock Anthropic API;
among them, through OpenClaw's gateway, Claude using OpenClaw's own tools under its system prompt, and a
call without a session. Last, the gateway check again in the channel mode, with the real Claude Code and
its channel plugin.

Prints one `ok`/`not ok` line per check and `N passed, N failed`; exits 1 if any failed. Arguments, if any,
pick the checks whose names contain one of them (`run.py localService`). scripts/conformance installs the
clients and runs this with their paths in the environment:

  SYNTHESIS_BRIDGE, SYNTHESIS_FAKE_CLAUDE          the binaries under test
  SYNTHESIS_CLAUDE, SYNTHESIS_MOCK_ANTHROPIC       the pinned claude CLI, the mock model's binary
  SYNTHESIS_NODE_BIN, SYNTHESIS_OPENCLAW           node 24's bin directory, OpenClaw's openclaw.mjs
  SYNTHESIS_OPENAI_NODE_MODULES, SYNTHESIS_OPENAI_PYTHONPATH   the openai packages
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE.parent.parent / "integrations" / "openclaw-plugin"
BRIDGE = Path(os.environ["SYNTHESIS_BRIDGE"])
FAKE_CLAUDE = Path(os.environ["SYNTHESIS_FAKE_CLAUDE"])
CLAUDE = Path(os.environ["SYNTHESIS_CLAUDE"])
MOCK_ANTHROPIC = Path(os.environ["SYNTHESIS_MOCK_ANTHROPIC"])
# The key the real CLI sends to the mock model; its config approves it.
MODEL_KEY = "sk-ant-conformance-0123456789abcdefghijklmnopqrstuvwxyz"
NODE_BIN = Path(os.environ["SYNTHESIS_NODE_BIN"])
OPENCLAW = Path(os.environ["SYNTHESIS_OPENCLAW"])
KEY = "sk-conformance"
# OpenClaw takes 6-8 s for a turn on 2 cores; a run that takes this long is stuck.
OPENCLAW_PATIENCE = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_of(program):
    """{pid: argv} of the live processes running `program`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == bytes(program):
            found[int(entry.name)] = [a.decode() for a in argv if a]
    return found


def side_world(world, name):
    """A world for a second bridge: its own state and agents' config directory, so that what it did can be
    told apart; the workspace is the main world's, the one OpenClaw works in."""
    side = world / name
    (side / "claude").mkdir(parents=True)
    (side / "workspace").symlink_to(world / "workspace")
    return side


def stop(process, signal_to=None):
    """SIGTERM, and SIGKILL if that has not worked in 30 s. `signal_to` sends to a whole process group."""
    send = signal_to or process.send_signal
    send(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
        raise


def kill_bridges_of(world):
    """Kills what a bridge started by OpenClaw left running (after a failed check) and its agents."""
    for pid, argv in processes_of(BRIDGE).items():
        if str(world / "state") in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid in agents_configured_in(world / "claude"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def environment_without_synthesis_variables():
    """This run's environment minus its SYNTHESIS_* variables, which a bridge would read as options."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SYNTHESIS_")}


def bridge_env(world, model=None):
    """The bridge's environment; with the mock `model`, what the real CLI needs to use it quietly."""
    env = {**environment_without_synthesis_variables(), "CLAUDE_CONFIG_DIR": str(world / "claude")}
    if model:
        env = {k: v for k, v in env.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))}
        env.update({
            "ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": MODEL_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1", "DISABLE_AUTOUPDATER": "1",
            # Without it, the features seeded into the config (channels) are not read with the traffic off.
            "CLAUDE_CODE_GB_DISK_CACHE_WHEN_TELEMETRY_OFF": "1",
        })
    return env


def bridge_args(listen, world, *extra, claude=FAKE_CLAUDE):
    """The bridge's arguments: its workspace root and state live in `world`."""
    return [
        "--listen", listen,
        "--ws-listen", "127.0.0.1:0",
        "--api-key", KEY,
        "--claude-bin", str(claude),
        "--workspace-root", str(world / "workspace"),
        "--state-dir", str(world / "state"),
        *extra,
    ]


class MockModel:
    """The project's mock Anthropic API (testing/mock-anthropic) as a process on a free port."""

    def __init__(self, world):
        self.log = world / "mock-anthropic.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([str(MOCK_ANTHROPIC)], stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=log)
        deadline = time.monotonic() + 30
        while not (ready := re.search(r"ANTHROPIC_BASE_URL=(\S+)", self.log.read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"the mock model did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.url = ready.group(1)

    def stop(self):
        stop(self.process)


def seed_claude_config(world, channels=False):
    """What the real CLI needs in its config to run without asking anything: onboarding done and the
    mock's key approved. The channels feature is turned on, with the workspace trusted, only for the channel
    mode: the stream-json mode needs neither."""
    config = {"hasCompletedOnboarding": True,
              "customApiKeyResponses": {"approved": [MODEL_KEY[-20:]], "rejected": []}}
    if channels:
        config["cachedGrowthBookFeatures"] = {"tengu_harbor": True}
        config["projects"] = {str((world / "workspace").resolve()): {"hasTrustDialogAccepted": True}}
    (world / "claude" / ".claude.json").write_text(json.dumps(config))


class Bridge:
    """The `bridge` binary, started on a free port; stopped with SIGTERM, as a service manager would. With
    the mock `model`, its agent is the real Claude Code in `mode`."""

    def __init__(self, world, *extra, model=None, mode="stream-json"):
        self.log = world / "bridge.log"
        claude = FAKE_CLAUDE
        if model:
            extra, claude = (*extra, "--claude-mode", mode), CLAUDE
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(BRIDGE), *bridge_args("127.0.0.1:0", world, *extra, claude=claude)],
                env=bridge_env(world, model), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + 30
        while not (ready := re.search(r"bridge ready: POST http://([\d.:]+)/", self.log.read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"the bridge did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.addr = ready.group(1)
        self.url = f"http://{self.addr}/v1"

    def stop(self):
        stop(self.process)


@contextlib.contextmanager
def running(bridge):
    try:
        yield bridge
    finally:
        bridge.stop()


class Suite:
    """Counts the checks; with `only` words, runs just the checks whose names contain one of them."""

    def __init__(self, only):
        self.passed = self.failed = 0
        self.only = only

    def selected(self, name):
        return not self.only or any(word in name for word in self.only)

    def report(self, ok, name, why=""):
        if ok:
            self.passed += 1
            print(f"ok - {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok - {name}:\n    {why.strip().replace(chr(10), chr(10) + '    ')}", flush=True)

    def check(self, name, function, *args):
        if not self.selected(name):
            return
        try:
            function(*args)
            self.report(True, name)
        except Exception:  # a check's failure, whatever raised it, is reported and counted
            self.report(False, name, traceback.format_exc())

    def client_script(self, name, argv, env, prefix=""):
        """Runs a script that prints its own `ok`/`not ok` lines, and counts them (named `prefix` + name)."""
        if not self.selected(name):
            return
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        counted = 0
        for line in result.stdout.splitlines():
            if line.startswith("ok - ") or line.startswith("not ok - "):
                counted += 1
                self.report(line.startswith("ok"), prefix + line.split(" - ", 1)[1].split(":", 1)[0],
                            line.split(":", 1)[1] if ":" in line else "")
            elif counted and line.startswith("    "):
                print(line, flush=True)
        if counted == 0 or (result.returncode != 0 and "not ok - " not in result.stdout):
            self.report(False, f"{name} ran", f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")


class OpenClaw:
    """OpenClaw's CLI with its own home, quiet and offline, configured with the bridge as provider `bridge`."""

    def __init__(self, world, home="openclaw-home"):
        self.world = world
        self.home = world / home
        self.home.mkdir(exist_ok=True)
        # Tests want one request per turn: no retries of failed model calls (OpenClaw makes 8-9 by default).
        settings = world / "workspace" / ".openclaw" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"retry": {"provider": {"maxRetries": 0}}}))
        # When each session key last had a turn, for the idle reset policy.
        self.last_turn = {}

    @staticmethod
    def config(base_url, workspace, **provider):
        """The OpenClaw config the README shows, pointed at `base_url`."""
        return {
            "agents": {"defaults": {"model": {"primary": "bridge/claude"}, "workspace": str(workspace)}},
            "models": {"mode": "merge", "providers": {"bridge": {
                "baseUrl": base_url, "apiKey": KEY, "api": "openai-completions",
                "models": [{"id": "claude", "name": "Claude via bridge", "reasoning": False, "input": ["text"],
                            "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                            "contextWindow": 200000, "maxTokens": 8192}],
                **provider,
            }}},
            "update": {"checkOnStart": False},
        }

    def write_config(self, name, config):
        path = self.world / f"{name}.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def env(self, config_path):
        # The bridges OpenClaw starts inherit it.
        env = environment_without_synthesis_variables()
        env.update({
            "PATH": f"{NODE_BIN}:{env['PATH']}",
            "HOME": str(self.home), "OPENCLAW_HOME": str(self.home),
            "OPENCLAW_CONFIG_PATH": str(config_path),
            "OPENCLAW_NO_AUTO_UPDATE": "1", "DO_NOT_TRACK": "1", "OPENCLAW_DISABLE_BONJOUR": "1",
            "NO_COLOR": "1",
        })
        return env

    def command(self, *args):
        return [str(NODE_BIN / "node"), str(OPENCLAW), *args]

    def run(self, config_path, *args):
        """Runs `openclaw ARGS… --json`; returns (exit code, parsed JSON output)."""
        result = subprocess.run(
            self.command(*args, "--json"), env=self.env(config_path), cwd=self.world / "workspace",
            capture_output=True, text=True, timeout=OPENCLAW_PATIENCE,
        )
        try:
            return result.returncode, json.loads(result.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"openclaw exit {result.returncode}, no JSON:\n{result.stdout}\n{result.stderr[-3000:]}")

    def exec(self, config_path, message, timeout=45):
        """`openclaw agent exec`: one isolated turn. Returns (exit code, JSON)."""
        return self.run(config_path, "agent", "exec", "--config", str(config_path),
                        "--cwd", str(self.world / "workspace"), "--timeout", str(timeout), message)

    def turn(self, config_path, session_key, message):
        """`openclaw agent --local --session-key K`: a turn of a persistent session. Returns the reply."""
        code, out = self.run(config_path, "agent", "--local", "--session-key", session_key, "-m", message)
        self.last_turn[session_key] = time.monotonic()
        assert code == 0, f"exit {code}: {out}"
        return out["payloads"][0]["text"]


class Gateway:
    """`openclaw gateway run` with the OpenClaw `config` (a dict), for turns that go through the gateway as
    a chat app's do; stopped with its process group."""

    def __init__(self, openclaw, name, config):
        self.openclaw = openclaw
        config = {**config, "gateway": {"mode": "local", "port": free_port(), "bind": "loopback",
                                        "auth": {"mode": "token", "token": "gateway-token"}}}
        # OpenClaw writes beside its config: give it a directory of its own.
        self.config_path = openclaw.world / name / "openclaw.json"
        self.config_path.parent.mkdir(parents=True)
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log = openclaw.world / name / "gateway.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(openclaw.command("gateway", "run"), env=openclaw.env(self.config_path),
                                            cwd=openclaw.world / "workspace", stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + OPENCLAW_PATIENCE
        while "[gateway] ready" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no gateway:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def turn(self, session_key, message):
        """`openclaw agent --session-key K -m M`, through the gateway. Returns the reply."""
        code, out = self.openclaw.run(self.config_path, "agent", "--session-key", session_key, "-m", message)
        assert code == 0, f"exit {code}: {out}"
        return out["result"]["payloads"][0]["text"]

    def stop(self):
        if self.process.poll() is None:
            stop(self.process, signal_to=lambda sig: os.killpg(self.process.pid, sig))
        # What the gateway started and left behind goes with its process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def history(reply):
    """`turn N of conversation U`, fake_claude's answer to `history` → (N, U)."""
    found = re.fullmatch(r"turn (\d+) of conversation (\S+)", reply)
    assert found, f"not an answer to `history`: {reply!r}"
    return int(found.group(1)), found.group(2)


def agents_of(conversation):
    """The argv of every fake_claude process working on `conversation`."""
    return [argv for argv in processes_of(FAKE_CLAUDE).values() if conversation in argv]


def session_records(state):
    """The session records in the bridge's state directory `state`, as its store left them: the snapshot,
    then the journal's changes."""
    snapshot = state / "sessions.json"
    records = {s["key"]: s for s in json.loads(snapshot.read_text())["sessions"]} if snapshot.exists() else {}
    journal = state / "sessions.journal"
    for line in (journal.read_text().splitlines() if journal.exists() else []):
        try:
            change = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line
        if change["change"] == "put":
            records[change["record"]["key"]] = change["record"]
        else:
            records.pop(change["key"], None)
    return list(records.values())


def conversation_of(world, session_key):
    """The agent conversation the bridge's state gives `session_key`."""
    return next(s["conversation_id"] for s in session_records(world / "state") if s["key"] == session_key)


def agents_configured_in(claude_dir):
    """The fake_claude processes whose CLAUDE_CONFIG_DIR is `claude_dir`."""
    wanted = f"CLAUDE_CONFIG_DIR={claude_dir}".encode()
    found = []
    for pid in processes_of(FAKE_CLAUDE):
        with contextlib.suppress(OSError):
            if wanted in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


# --- the OpenClaw checks ---------------------------------------------------------------------------------

def exec_final_is_the_reply(openclaw, config):
    # Streamed word by word by the agent: OpenClaw must put the deltas back together, byte for byte.
    reply = 'Hello from "OpenClaw", ünïcode ✓ and a\\backslash'
    code, out = openclaw.exec(config, f"stream {reply}")
    assert code == 0, out
    assert out["final"] == reply, f"{out['final']!r} != {reply!r}"


def session_key_keeps_its_agent(openclaw, config):
    first = history(openclaw.turn(config, "agent:main:conformance-1", "history"))
    second = history(openclaw.turn(config, "agent:main:conformance-1", "history"))
    conversation = first[1]
    assert (first[0], second) == (1, (2, conversation)), f"{first} then {second}"
    # Started once with --session-id (a restarted process would have been given --resume) and still there.
    agents = agents_of(conversation)
    assert len(agents) == 1 and "--session-id" in agents[0], agents

    other = history(openclaw.turn(config, "agent:main:conformance-2", "history"))
    assert other[0] == 1 and other[1] != conversation, other
    assert len(agents_of(other[1])) == 1, "the second session key has its own agent process"
    assert len(agents_of(conversation)) == 1, "the first session's agent is still there"


def retry_after_a_crash_asks_the_agent_once(openclaw, world, bridge):
    """With OpenClaw's default retries on, an agent that dies on a message fails the call (502, or an error
    chunk), OpenClaw sends the same messages again, and the bridge has the resumed agent carry on with the
    message it already has instead of giving it the question twice."""
    workspace = world / "workspace" / "retrying"
    (workspace / ".openclaw").mkdir(parents=True)
    (workspace / ".openclaw" / "settings.json").write_text("{}")  # OpenClaw's defaults: retries on
    config = openclaw.write_config("retrying", OpenClaw.config(bridge.url, workspace))
    code, out = openclaw.run(config, "agent", "exec", "--config", str(config), "--cwd", str(workspace),
                             "--timeout", "90", "crash")
    assert code == 0, out
    assert out["final"].startswith("continued: ") and out["final"].endswith("crash"), out["final"]
    log = (world / "bridge.log").read_text()
    assert "carries on with the same message" in log, "OpenClaw did not retry, or the bridge asked again"
    # The prompt is in the agent's conversation once, and the retry's note beside it.
    asked = [line for transcript in (world / "claude" / "projects").rglob("*.jsonl")
             for line in transcript.read_text().splitlines()
             if '"type":"user"' in line and "crash\\n</channel>" in line]
    assert len(asked) == 1, asked


def new_conversation_starts_a_new_agent_conversation(openclaw, config):
    """OpenClaw gives a session a new sessionId when its reset policy finds the session stale. (In 2026.9.6
    its /new and /reset keep the sessionId: they clear the history in place.) The shortest policy is one
    idle minute, used here for one turn of the first session key, which has been idle meanwhile."""
    key = "agent:main:conformance-1"
    if key not in openclaw.last_turn:  # run on its own
        history(openclaw.turn(config, key, "history"))
    before = conversation_of(openclaw.world, key)
    idle = json.loads(config.read_text())
    idle["session"] = {"reset": {"mode": "idle", "idleMinutes": 1}}
    idle_config = openclaw.write_config("idle-reset", idle)
    time.sleep(max(0.0, openclaw.last_turn[key] + 62 - time.monotonic()))
    turn, conversation = history(openclaw.turn(idle_config, key, "history"))
    assert turn == 1 and conversation != before, f"turn {turn} of {conversation}, before: {before}"
    assert conversation_of(openclaw.world, key) == conversation
    assert not agents_of(before), "the old conversation's agent was stopped"
    agents = agents_of(conversation)
    assert len(agents) == 1 and "--session-id" in agents[0], agents


# --- the stream-json checks: the real Claude Code and the mock model ---------------------------------------

def stream_json_exec_final_is_the_reply(openclaw, config):
    # The mock streams its answer one word per delta: OpenClaw must put them back together, byte for byte.
    message = 'Hello from "OpenClaw", ünïcode ✓ and a\\backslash'
    code, out = openclaw.exec(config, message)
    assert code == 0, out
    final = out["final"]
    assert final.startswith("reply to: ") and final.endswith(message), f"{final!r}"


def stream_json_session_key_keeps_history_in_one_process(openclaw, config):
    key = "agent:main:stream-json-1"
    first = openclaw.turn(config, key, "HISTORY one")
    second = openclaw.turn(config, key, "HISTORY two")
    assert first.startswith("history: ") and first.count("HISTORY") == 1, first
    assert second.count("HISTORY one") == 1 and second.count("HISTORY two") == 1, second
    conversation = conversation_of(openclaw.world, key)
    claudes = [argv for argv in processes_of(CLAUDE).values() if conversation in argv]
    assert len(claudes) == 1, claudes
    assert "--session-id" in claudes[0] and "stream-json" in claudes[0], claudes[0]


def stream_json_openclaw_instructions_reach_the_model(openclaw, config, model):
    # OpenClaw's system prompt comes after Claude Code's own in the model's requests: the mock logs the end
    # of the system prompt, which is the end of OpenClaw's (its dynamic section).
    prompt = "what are your instructions?"
    openclaw.turn(config, "agent:main:stream-json-instructions", prompt)
    lines = [line for line in model.log.read_text().splitlines() if prompt in line]
    assert lines, "the model never saw the turn"
    assert "<!-- /openclaw:attempt:DYNAMIC -->" in lines[-1], lines[-1]


def openclaw_gateway_with_claude(openclaw, bridge, model, mode):
    # OpenClaw's gateway offers its own tools with every request; the bridge gives them to Claude. The mock
    # model calls OpenClaw's `read` on a file of the workspace: OpenClaw runs it, sends the result back, and
    # Claude's same turn goes on with it. The model's request ends with OpenClaw's system prompt. Then the
    # gateway's one-shot model call, which names no session, is answered by a fresh claude.
    session = f"agent:main:{mode}-tools"
    note = openclaw.world / "workspace" / "note.txt"
    note.write_text("the secret word is marmalade\n")
    prompt = f'CALL read {{"path": "{note}"}}'
    provider = OpenClaw.config(bridge.url, openclaw.world / "workspace")
    with running(Gateway(openclaw, f"{mode}-gateway", provider)) as gateway:
        reply = gateway.turn(session, prompt)
        one_shot_without_a_session_is_answered(openclaw, gateway.config_path, bridge,
                                               lambda asked: f"reply to: {asked}", "--gateway")
    offered = re.findall(rf'starting claude \({mode}\).*tools=\[([^\]]*)\]', bridge.log.read_text())
    names = {name.strip().strip('"') for listed in offered for name in listed.split(",")}
    assert "read" in names, f"OpenClaw's tools as the bridge got them: {sorted(names)}"
    assert reply.startswith(f"reply to: {prompt} (tools said: ") and "marmalade" in reply, reply
    asked = [line for line in model.log.read_text().splitlines() if "CALL read" in line and str(note) in line]
    assert asked, "the model never saw the turn"
    assert "<!-- /openclaw:attempt:DYNAMIC -->" in asked[0], asked[0]


def one_shot_without_a_session_is_answered(openclaw, config, bridge, answer, where="--local"):
    """`openclaw infer model run`: OpenClaw's one-shot model call names no session, as its background runs
    (the memory plugin's) do. The bridge answers it as a one-off turn (`answer` of the prompt) rather than
    refusing it. `where`: `--local`, or `--gateway` through a running gateway."""
    prompt = "a question that names no session"
    one_off_turns = lambda: bridge.log.read_text().count("turn received key_source=OneOff")
    before = one_off_turns()
    code, out = openclaw.run(config, "infer", "model", "run", where, "--prompt", prompt)
    assert code == 0, out
    assert out["outputs"][0]["text"] == answer(prompt), out
    assert one_off_turns() == before + 1, "the call did not come as a one-off turn"


# The agent stays silent for SILENCE; OpenClaw gives up after TIMEOUT without a chunk (the first included,
# so TIMEOUT leaves room for starting the agent) unless heartbeats come.
TIMEOUT, SILENCE = 5, 10


def heartbeat_outlasts_provider_timeout(openclaw, bridge):
    config = openclaw.write_config("slow", OpenClaw.config(bridge.url, openclaw.world / "workspace",
                                                           timeoutSeconds=TIMEOUT))
    code, out = openclaw.exec(config, f"slow {SILENCE * 1000} worth the wait")
    assert code == 0, out
    assert out["final"] == "echo: worth the wait", out["final"]


def timeout_without_heartbeat_fails(openclaw, world):
    """The control for the check above: the same turn against a bridge that sends no heartbeats fails after
    one timeout (OpenClaw's retries are off), long before exec's own limit."""
    with running(Bridge(side_world(world, "silent"), "--heartbeat", "off")) as silent:
        config = openclaw.write_config("slow-silent", OpenClaw.config(silent.url, world / "workspace",
                                                                      timeoutSeconds=TIMEOUT))
        started = time.monotonic()
        code, out = openclaw.exec(config, f"slow {SILENCE * 1000} worth the wait", timeout=60)
        took = time.monotonic() - started
    assert code == 2 and out["status"] == "timeout", f"exit {code}: {out}"
    assert took < 30, f"took {took:.0f} s: OpenClaw retried, or waited for exec's --timeout"


def local_service_starts_and_stops_the_bridge(openclaw, world):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    own = side_world(world, "local-service")
    config = openclaw.write_config("local-service", OpenClaw.config(base_url, world / "workspace", localService={
        "command": str(BRIDGE),
        "args": bridge_args(f"127.0.0.1:{port}", own),
        "env": {"CLAUDE_CONFIG_DIR": str(own / "claude")},
        # OpenClaw probes it with the provider's key: a 200 needs the key to be accepted on /v1/models.
        "healthUrl": f"{base_url}/models",
        "readyTimeoutMs": 30000,
    }))
    assert not port_open(port), "nothing listens before OpenClaw starts the bridge"
    try:
        code, out = openclaw.exec(config, "hello from a local service")
        assert code == 0, out
        assert out["final"] == "echo: hello from a local service", out["final"]
        # The bridge OpenClaw started served the turn: its state file names the session, and its agent
        # wrote its transcript under the config directory given to it.
        sessions = session_records(own / "state")
        assert [s["key"].split(":")[:3] for s in sessions] == [["agent", "main", "explicit"]], sessions
        assert list((own / "claude").rglob("*.jsonl")), "no transcript from the bridge's agent"
        # OpenClaw stopped it when it exited, and the bridge stopped its agent.
        assert not port_open(port), "the bridge still listens after OpenClaw exited"
        assert not agents_configured_in(own / "claude"), "an agent outlived its bridge"
    finally:
        kill_bridges_of(own)


def plugin_runs_the_bridge_under_the_gateway(world):
    """The third way: the project's OpenClaw plugin runs the bridge as a service of `openclaw gateway run`;
    a turn sent through the gateway reaches it, and stopping the gateway stops the bridge."""
    openclaw = OpenClaw(world, home="gateway-home")
    own = side_world(world, "plugin")
    bridge_port = free_port()
    config = OpenClaw.config(f"http://127.0.0.1:{bridge_port}/v1", world / "workspace")
    config["plugins"] = {
        "load": {"paths": [str(PLUGIN)]},
        # Plugins from a path start with the gateway only when enabled explicitly.
        "entries": {"synthesis-bridge": {"enabled": True, "config": {
            "command": str(BRIDGE),
            "args": bridge_args(f"127.0.0.1:{bridge_port}", own),
            "env": {"CLAUDE_CONFIG_DIR": str(own / "claude")},
        }}},
    }
    gateway = None
    try:
        gateway = Gateway(openclaw, "plugin-gateway", config)
        deadline = time.monotonic() + OPENCLAW_PATIENCE
        while not port_open(bridge_port):
            assert gateway.process.poll() is None and time.monotonic() < deadline, \
                f"no bridge under the gateway:\n{gateway.log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.2)
        reply = gateway.turn("agent:main:plugin", "hello through the gateway")
        assert reply == "echo: hello through the gateway", reply
        assert agents_configured_in(own / "claude"), "the plugin's bridge runs the session's agent"
        # SIGTERM to the gateway alone: the plugin stops the bridge.
        stop(gateway.process)
        assert not port_open(bridge_port), "the bridge still listens after the gateway stopped"
        assert not agents_configured_in(own / "claude"), "an agent outlived its bridge"
    finally:
        if gateway:
            gateway.stop()
        kill_bridges_of(own)


# --- the run ---------------------------------------------------------------------------------------------

def stream_json(suite, world):
    """The SDK checks and OpenClaw's turns against `--claude-mode stream-json`."""
    for directory in ("workspace", "claude"):
        (world / directory).mkdir(parents=True)
    seed_claude_config(world)
    model = MockModel(world)
    try:
        with running(Bridge(world, "--heartbeat", "1s", model=model)) as bridge:
            sdk_env = {**os.environ, "BRIDGE_URL": bridge.url, "BRIDGE_KEY": KEY, "BRIDGE_AGENT": "claude"}
            suite.client_script("stream-json python sdk", [sys.executable, str(HERE / "openai_python.py")],
                                {**sdk_env, "PYTHONPATH": os.environ["SYNTHESIS_OPENAI_PYTHONPATH"]},
                                prefix="stream-json ")
            suite.client_script("stream-json node sdk", [str(NODE_BIN / "node"), str(HERE / "openai_node.cjs")],
                                {**sdk_env, "NODE_PATH": os.environ["SYNTHESIS_OPENAI_NODE_MODULES"]},
                                prefix="stream-json ")
            openclaw = OpenClaw(world)
            config = openclaw.write_config("provider", OpenClaw.config(bridge.url, world / "workspace"))
            suite.check("stream-json openclaw exec: .final is the streamed reply, byte for byte",
                        stream_json_exec_final_is_the_reply, openclaw, config)
            suite.check("stream-json openclaw session key: the history is kept, in one claude process",
                        stream_json_session_key_keeps_history_in_one_process, openclaw, config)
            suite.check("stream-json openclaw gateway: Claude gets OpenClaw's system prompt and calls its read tool; "
                        "a call without a session is answered",
                        openclaw_gateway_with_claude, openclaw, bridge, model, "stream-json")
            suite.check("stream-json openclaw instructions: OpenClaw's system prompt is in the model's request",
                        stream_json_openclaw_instructions_reach_the_model, openclaw, config, model)
            suite.check("stream-json openclaw one-shot: a call without a session is answered by a fresh claude",
                        one_shot_without_a_session_is_answered, openclaw, config, bridge,
                        lambda prompt: f"reply to: {prompt}")
    finally:
        model.stop()


def channel(suite, world):
    """OpenClaw's tools through the channel mode, with the real Claude Code and its channel plugin."""
    for directory in ("workspace", "claude"):
        (world / directory).mkdir(parents=True)
    seed_claude_config(world, channels=True)
    model = MockModel(world)
    try:
        with running(Bridge(world, "--heartbeat", "1s", model=model, mode="channel")) as bridge:
            suite.check("channel openclaw gateway: Claude gets OpenClaw's system prompt and calls its read tool; "
                        "a call without a session is answered",
                        openclaw_gateway_with_claude, OpenClaw(world), bridge, model, "channel")
    finally:
        model.stop()


def main(only):
    suite = Suite(only)
    with tempfile.TemporaryDirectory(prefix="synthesis-conformance-") as tmp:
        world = Path(tmp)
        for directory in ("workspace", "claude"):
            (world / directory).mkdir()
        with running(Bridge(world, "--heartbeat", "1s")) as bridge:
            sdk_env = {**os.environ, "BRIDGE_URL": bridge.url, "BRIDGE_KEY": KEY}
            suite.client_script("python sdk", [sys.executable, str(HERE / "openai_python.py")],
                                {**sdk_env, "PYTHONPATH": os.environ["SYNTHESIS_OPENAI_PYTHONPATH"]})
            suite.client_script("node sdk", [str(NODE_BIN / "node"), str(HERE / "openai_node.cjs")],
                                {**sdk_env, "NODE_PATH": os.environ["SYNTHESIS_OPENAI_NODE_MODULES"]})

            openclaw = OpenClaw(world)
            config = openclaw.write_config("provider", OpenClaw.config(bridge.url, world / "workspace"))
            suite.check("openclaw exec: .final is the reply", exec_final_is_the_reply, openclaw, config)
            suite.check("openclaw session key: one agent process and conversation each",
                        session_key_keeps_its_agent, openclaw, config)
            suite.check("openclaw one-shot: a call without a session is answered as a one-off turn",
                        one_shot_without_a_session_is_answered, openclaw, config, bridge,
                        lambda prompt: f"echo: {prompt}")
            suite.check(f"openclaw timeoutSeconds {TIMEOUT}, agent silent {SILENCE} s: heartbeats keep it waiting",
                        heartbeat_outlasts_provider_timeout, openclaw, bridge)
            suite.check("openclaw control: without heartbeats the same turn times out",
                        timeout_without_heartbeat_fails, openclaw, world)
            suite.check("openclaw default retries: an agent that dies on a message is not asked it twice",
                        retry_after_a_crash_asks_the_agent_once, openclaw, world, bridge)
            suite.check("openclaw localService: starts the bridge, probes /v1/models, runs a turn, stops it",
                        local_service_starts_and_stops_the_bridge, openclaw, world)
            suite.check("openclaw plugin: the gateway runs the bridge, a turn goes through, stopping stops it",
                        plugin_runs_the_bridge_under_the_gateway, world)
            # Last, so that the minute it waits for has mostly gone by in the checks above.
            suite.check("openclaw new sessionId in a session: a new agent conversation",
                        new_conversation_starts_a_new_agent_conversation, openclaw, config)
        stream_json(suite, world / "stream-json")
        channel(suite, world / "channel")
        if suite.failed:
            for log in sorted([*world.rglob("bridge.log"), *world.rglob("gateway.log"),
                               *world.rglob("mock-anthropic.log")]):
                tail = log.read_text(errors="replace").splitlines()[-80:]
                print(f"--- {log.relative_to(world)} (last {len(tail)} lines) ---", *tail, sep="\n")

    print(f"{suite.passed} passed, {suite.failed} failed")
    if suite.passed + suite.failed == 0:
        print(f"no check's name contains any of {only}")
        return 1
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
