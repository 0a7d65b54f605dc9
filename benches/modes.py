"""What a user feels of each Claude mode: the release `bridge` with the real, pinned Claude Code against the
project's mock Anthropic API (testing/mock-anthropic), on 127.0.0.1, the same turns in each mode; and, beside
it, what the user would otherwise run: OpenClaw's own Claude backend, with the same CLI and the same model.

Measures, asserts nothing. Run by scripts/bench-modes, which builds the binaries and sets:

  SYNTHESIS_BRIDGE, SYNTHESIS_MOCK_ANTHROPIC, SYNTHESIS_CLAUDE   the binaries
  SYNTHESIS_CLAUDE_ACP                                             the Claude ACP agent's entry point
                                                                   (scripts/install-claude-agent-acp; `acp` only)
  SYNTHESIS_NODE_BIN, SYNTHESIS_OPENCLAW                           node 24's bin directory, openclaw.mjs
                                                                   (scripts/install-clients; `openclaw` only)
  BENCH_MODES                                                      the modes to run (channel stream-json acp
                                                                   openclaw)
  BENCH_NEW, BENCH_WARM                                            how many new sessions and warm turns
  BENCH_SYSTEM_BYTES                                               a system message of this size in every
                                                                   request (0: none)

The modes:
- `channel`, `stream-json`: the bridge's `--claude-mode`; a session per `user`;
- `acp`: the bridge's `--acp-agent` with the Claude ACP agent (`@zed-industries/claude-agent-acp`) driving the
  same pinned CLI; a session per `user`, one agent process (and the claude it starts) each;
- `openclaw`: OpenClaw 2026.9.6's gateway serving `POST /v1/chat/completions`, its agent model
  `claude-cli/claude-sonnet-5`: the bundled Anthropic plugin's `claude-cli` backend, which keeps one warm
  `claude -p --input-format stream-json …` per OpenClaw session; a session per `x-openclaw-session-key`.

For each mode it prints the figures, then one Markdown table of all modes:
- new session, first turn: request -> [DONE] for a session whose process is not running yet;
- warm turn: request -> first text delta, and -> [DONE], on a session whose process is running;
- deltas per 10 KB answer: the text chunks the client got for `LONG 10000`, against the model's deltas;
- model requests per plain turn;
- resident memory per session: VmRSS of each session's process tree (claude and what it started);
- the bridge's or the gateway's own memory: its process tree without the sessions'.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BRIDGE = os.environ["SYNTHESIS_BRIDGE"]
MOCK = os.environ["SYNTHESIS_MOCK_ANTHROPIC"]
CLAUDE = os.environ["SYNTHESIS_CLAUDE"]
NODE_BIN = os.environ.get("SYNTHESIS_NODE_BIN")
OPENCLAW = os.environ.get("SYNTHESIS_OPENCLAW")
CLAUDE_ACP = os.environ.get("SYNTHESIS_CLAUDE_ACP")
MODES = os.environ.get("BENCH_MODES", "channel stream-json acp openclaw").split()
NEW = int(os.environ.get("BENCH_NEW", "5"))
# Instructions of this many bytes in a system message of every request, as OpenClaw sends (about 48 KB).
SYSTEM_BYTES = int(os.environ.get("BENCH_SYSTEM_BYTES", "0"))
SYSTEM = ("You follow the instructions of the app you work in. " * (SYSTEM_BYTES // 52 + 1))[:SYSTEM_BYTES]
WARM = int(os.environ.get("BENCH_WARM", "20"))
KEY = "sk-ant-bench-0123456789abcdefghijklmnopqrstuvwxyz"
GATEWAY_TOKEN = "bench-gateway-token"
PATIENCE = 120


@dataclass
class Server:
    """A mode's OpenAI-compatible server: where turns go, and how a turn names its session."""
    process: subprocess.Popen
    addr: str
    # The pids of the sessions' processes, given the server's pid.
    sessions: Callable[[int], list]
    model: str = "claude"
    headers: dict = field(default_factory=dict)
    # The header that carries the session; without one, the `user` field does.
    session_header: str | None = None


def start(argv, log, env=None, ready=None, cwd=None):
    """Starts `argv` with its output in `log`; waits for `ready` (a regex) in the log, returns (process, match)."""
    out = open(log, "wb")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=cwd)
    deadline = time.monotonic() + 60
    while not (found := re.search(ready, Path(log).read_text(errors="replace"))):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"{argv[0]} did not start:\n{Path(log).read_text(errors='replace')[-3000:]}")
        time.sleep(0.02)
    return process, found


def stop(process, patience=30):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        process.kill()


def stop_server(server):
    """Stops `server`, then any session's process it left behind, and the Claude Code plugin directories
    OpenClaw gave them, which it leaves in /tmp/openclaw. The gateway's claude processes run in sessions of
    their own, which a signal to this run's process group does not reach, and outlive a killed gateway; and a
    gateway with a turn under way waits minutes for it before it exits (stopped mid-run, by `timeout`)."""
    left = server.sessions(server.process.pid)
    plugin_dirs = [openclaw_plugin_dir(pid) for pid in left]
    stop(server.process, patience=10)
    for pid in left:
        if is_claude(pid):
            os.kill(pid, signal.SIGKILL)
    for directory in filter(None, plugin_dirs):
        shutil.rmtree(directory, ignore_errors=True)


def openclaw_plugin_dir(pid):
    """The `openclaw-claude-skills-*` directory of the plugin OpenClaw passed `pid` (`--plugin-dir`), if any."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for flag, value in zip(argv, argv[1:]):
        if flag == "--plugin-dir" and (found := re.match(r".*/openclaw-claude-skills-[^/]+", value)):
            return found.group(0)
    return None


def turn(server, user, text):
    """One streamed turn: (seconds to the first text delta, seconds to [DONE], text chunks, text)."""
    host, port = server.addr.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=PATIENCE)
    messages = [{"role": "user", "content": text}]
    if SYSTEM:
        messages.insert(0, {"role": "system", "content": SYSTEM})
    body = {"model": server.model, "stream": True, "messages": messages}
    headers = {"Content-Type": "application/json", **server.headers}
    if server.session_header:
        headers[server.session_header] = user
    else:
        body["user"] = user
    body = json.dumps(body)
    began = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body, headers)
    response = connection.getresponse()
    if response.status != 200:
        sys.exit(f"{text!r}: HTTP {response.status} {response.read()[:500]!r}")
    first, chunks, answer = None, 0, []
    for line in response:
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[len(b"data: "):]
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            sys.exit(f"{text!r}: {chunk['error']}")
        content = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content")
        if content:
            first = first or time.perf_counter() - began
            chunks += 1
            answer.append(content)
    done = time.perf_counter() - began
    connection.close()
    return first, done, chunks, "".join(answer)


def children(pid):
    """The pids of `pid`'s children."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def is_claude(pid):
    """Whether `pid` runs the claude CLI (by the name it was started as: OpenClaw runs `claude` from PATH)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(argv0) in (b"claude", b"claude.exe")


def claude_processes(pid):
    """The claude processes under `pid`, not counting what claude started: the gateway's sessions. (Its other
    children are its own workers.)"""
    found, todo = [], children(pid)
    while todo:
        current = todo.pop()
        if is_claude(current):
            found.append(current)
        else:
            todo.extend(children(current))
    return found


def tree_rss_mib(pid):
    """VmRSS of `pid` and everything under it, in MiB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
        except (OSError, AttributeError):
            continue
        todo.extend(children(current))
    return total / 1024


def long_answer_deltas(bytes_):
    """How many deltas the mock streams for `LONG bytes_`: one per word (script::long_text)."""
    text, n = "", 0
    while len(text) < bytes_:
        text += f"w{n} "
        n += 1
    return n


def seed_config(config_dir, workspace, channels):
    config = {"hasCompletedOnboarding": True,
              "customApiKeyResponses": {"approved": [KEY[-20:]], "rejected": []},
              "projects": {str(workspace): {"hasTrustDialogAccepted": True}}}
    if channels:
        config["cachedGrowthBookFeatures"] = {"tengu_harbor": True}
    (config_dir / ".claude.json").write_text(json.dumps(config))


def requests_seen(mock_log):
    return sum(1 for line in Path(mock_log).read_text().splitlines() if " /v1/messages" in line)


def claude_env(base_url):
    """What the pinned CLI needs to use the mock, quietly; the same in every mode."""
    return {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": KEY,
            "CLAUDE_CODE_GB_DISK_CACHE_WHEN_TELEMETRY_OFF": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1", "DISABLE_AUTOUPDATER": "1",
            "ENABLE_TOOL_SEARCH": "false"}


def bridge(mode, world, workspace, base_url):
    """The release bridge in `--claude-mode mode`, its claude configured in `world/claude`."""
    config_dir = world / "claude"
    config_dir.mkdir()
    seed_config(config_dir, workspace.resolve(), channels=mode == "channel")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_", "SYNTHESIS_"))}
    env.update({**claude_env(base_url), "CLAUDE_CONFIG_DIR": str(config_dir)})
    argv = [BRIDGE, "--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0",
            "--claude-bin", CLAUDE, "--workspace-root", str(workspace), "--state-dir", str(world / "state"),
            "--log", "info"]
    if mode == "acp":
        if not CLAUDE_ACP:
            sys.exit("the acp mode needs SYNTHESIS_CLAUDE_ACP (scripts/install-claude-agent-acp)")
        # The agent drives the pinned CLI; as root its SDK needs IS_SANDBOX (../shared/facts/acp-agents.md).
        env.update({"CLAUDE_CODE_EXECUTABLE": CLAUDE, "IS_SANDBOX": "1"})
        argv += ["--acp-agent", f"node '{CLAUDE_ACP}'"]
    else:
        argv += ["--claude-mode", mode]
    process, found = start(argv, world / "bridge.log", env, ready=r"bridge ready: POST http://([\d.:]+)/")
    return Server(process, found.group(1), sessions=children)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gateway_config(workspace, port, log):
    """OpenClaw's config: its own Claude backend as the agent's model, the chat completions endpoint on,
    nothing in the background that would call the model between turns (the heartbeat)."""
    return {
        "agents": {"defaults": {"model": {"primary": "claude-cli/claude-sonnet-5"}, "workspace": str(workspace),
                                "heartbeat": {"every": "0m"}}},
        "gateway": {"mode": "local", "port": port, "bind": "loopback",
                    "auth": {"mode": "token", "token": GATEWAY_TOKEN},
                    "http": {"endpoints": {"chatCompletions": {"enabled": True}}}},
        "logging": {"file": str(log)},
        "update": {"checkOnStart": False},
    }


def gateway(world, workspace, base_url):
    """OpenClaw's gateway, quiet and offline in a home of its own, its Claude backend running the pinned CLI
    against `base_url`."""
    if not (NODE_BIN and OPENCLAW):
        sys.exit("the openclaw mode needs SYNTHESIS_NODE_BIN and SYNTHESIS_OPENCLAW (scripts/install-clients)")
    home = world / "home"
    # OpenClaw runs `claude` from PATH and removes ANTHROPIC_* from its environment: the pinned binary comes
    # first on PATH, and the CLI reads the rest from its user settings (`--setting-sources user` keeps them)
    # and `$HOME/.claude.json`.
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text(json.dumps({"env": claude_env(base_url)}))
    seed_config(home, workspace.resolve(), channels=False)
    bin_dir = world / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(CLAUDE)
    port = free_port()
    # OpenClaw writes beside its config: a directory of its own.
    config_path = home / ".openclaw" / "openclaw.json"
    config_path.parent.mkdir()
    config_path.write_text(json.dumps(gateway_config(workspace, port, world / "openclaw.log"), indent=2))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_", "SYNTHESIS_", "OPENCLAW_"))}
    env.update({"PATH": f"{bin_dir}:{NODE_BIN}:{env['PATH']}", "HOME": str(home), "OPENCLAW_HOME": str(home),
                "OPENCLAW_CONFIG_PATH": str(config_path), "OPENCLAW_NO_AUTO_UPDATE": "1", "DO_NOT_TRACK": "1",
                "OPENCLAW_DISABLE_BONJOUR": "1", "NO_COLOR": "1"})
    process, _ = start([str(Path(NODE_BIN) / "node"), OPENCLAW, "gateway", "run"], world / "gateway.log", env,
                       ready=r"\[gateway\] ready", cwd=workspace)
    return Server(process, f"127.0.0.1:{port}", sessions=claude_processes, model="openclaw/default",
                  headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"}, session_header="x-openclaw-session-key")


def take_turns(server, mock_log):
    """The same turns and figures for every mode."""
    figures = {}
    # Session keys as OpenClaw spells them (`agent:<agent id>:…`, its default agent is `main`); the bridge
    # takes them as they are.
    new = [turn(server, f"agent:main:bench-new-{n}", f"hello {n}") for n in range(NEW)]
    figures["new session, first turn (s)"] = statistics.median(done for _, done, _, _ in new)
    sessions = server.sessions(server.process.pid)
    if len(sessions) != NEW:
        print(f"({len(sessions)} session processes for {NEW} new sessions)", flush=True)
    rss = [tree_rss_mib(pid) for pid in sessions]
    figures["resident memory per session (MiB)"] = statistics.median(rss)
    figures["bridge's or gateway's own memory (MiB)"] = tree_rss_mib(server.process.pid) - sum(rss)

    warm_user = "agent:main:bench-warm"
    turn(server, warm_user, "warm up")
    # The mock writes its log every 100 ms: wait for the warm-up's line before counting, and for the
    # last turn's after.
    time.sleep(0.3)
    before = requests_seen(mock_log)
    warm = [turn(server, warm_user, f"warm turn {n}") for n in range(WARM)]
    time.sleep(0.3)
    figures["model requests per plain turn"] = (requests_seen(mock_log) - before) / WARM
    figures["warm turn, first delta (s)"] = statistics.median(first for first, _, _, _ in warm)
    figures["warm turn, done (s)"] = statistics.median(done for _, done, _, _ in warm)
    long = [turn(server, warm_user, "LONG 10000") for _ in range(3)]
    figures["deltas per 10 KB answer"] = statistics.median(chunks for _, _, chunks, _ in long)
    figures["the model's deltas for it"] = long_answer_deltas(10000)
    figures["10 KB answer, first delta (s)"] = statistics.median(first for first, _, _, _ in long)
    return figures


def measure(mode, world):
    world.mkdir()
    workspace = world / "workspace"
    workspace.mkdir()
    mock_log = world / "mock.log"
    mock, found = start([MOCK], mock_log, ready=r"ANTHROPIC_BASE_URL=(\S+)")
    try:
        if mode == "openclaw":
            server = gateway(world, workspace, found.group(1))
        else:
            server = bridge(mode, world, workspace, found.group(1))
        try:
            return take_turns(server, mock_log)
        finally:
            stop_server(server)
    finally:
        stop(mock)


def main():
    # `timeout` (scripts/bench-modes) ends the run with SIGTERM: stop what it started on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("modes.py: terminated"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-modes-") as tmp:
        for mode in MODES:
            print(f"--- {mode}", flush=True)
            results[mode] = measure(mode, Path(tmp) / mode)
            for name, value in results[mode].items():
                print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}", flush=True)
    names = list(next(iter(results.values())))
    print()
    print("| | " + " | ".join(MODES) + " |")
    print("|---|" + "---|" * len(MODES))
    for name in names:
        cells = [results[mode][name] for mode in MODES]
        print(f"| {name} | " + " | ".join(f"{c:.3f}".rstrip("0").rstrip(".") if isinstance(c, float) else str(c)
                                          for c in cells) + " |")


if __name__ == "__main__":
    main()
