//! `bridge`: serves an OpenAI-compatible chat-completions API in front of a coding agent.
//!
//! Run it with `cargo run --release --example bridge -- --help`. Every flag has a `SYNTHESIS_*`
//! environment equivalent.
//!
//! By default each session gets a long-lived interactive `claude` process whose channel plugin connects
//! back over a WebSocket (`--ws-listen`); with `--claude-mode stream-json` it is a long-lived `claude -p`
//! speaking stream-json on pipes instead, which streams every token and works with every login. Either
//! way its conversation id is kept in `--state-dir`, so a restarted bridge resumes it. With
//! `--agent-command`, each turn instead runs one shell command with the user's text on its standard
//! input. With `--acp-agent`, each session gets a long-lived process of any Agent Client Protocol agent
//! (Codex, Gemini CLI, goose, Claude through its ACP adapter, …).
//!
//! The same binary plays the part Claude Code runs on the bridge's behalf: `bridge channel` is the channel
//! MCP server that carries messages into each `claude` and its replies back. Claude Code's hooks report to
//! the bridge over HTTP on `--ws-listen`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use synthesis_backend_acp::{AcpBackend, AcpConfig, Allow, PermissionPolicy};
use synthesis_backend_claude_cli::{ClaudeCliBackend, ClaudeCliConfig, PermissionMode};
use synthesis_backend_command::CommandBackend;
use synthesis_bridge::http::{Bridge, BridgeConfig, WorkspacePolicy};
use synthesis_bridge::{AgentBackend, SessionKey};
use synthesis_spawner_process::ProcessSpawner;
use synthesis_store_json::JsonFileStore;
use synthesis_transport_ws::{WsConfig, WsTransport};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Serve a coding agent as an OpenAI-compatible chat-completions model.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The channel MCP server Claude Code starts in every session the bridge runs (not for use by hand):
    /// MCP on standard input and output, the bridge over `SYNTHESIS_WS_URL`.
    Channel,
}

/// `--claude-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClaudeMode {
    Channel,
    StreamJson,
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Address for the HTTP API.
    #[arg(long, env = "SYNTHESIS_LISTEN", default_value = "127.0.0.1:18790")]
    listen: SocketAddr,

    /// The `claude` program: a path, or a name looked up on PATH.
    #[arg(long, env = "SYNTHESIS_CLAUDE_BIN", default_value = "claude")]
    claude_bin: String,

    /// How the bridge talks to Claude Code: `channel` (the interactive TUI and the bridge's channel
    /// plugin; answers arrive whole) or `stream-json` (`claude -p` on pipes; every token streams, every
    /// login works, no plugin or `--ws-listen`).
    #[arg(long, env = "SYNTHESIS_CLAUDE_MODE", value_enum, default_value_t = ClaudeMode::Channel)]
    claude_mode: ClaudeMode,

    /// Run this shell command once per turn instead of a long-lived `claude`: the user's text arrives on
    /// its standard input, its standard output is streamed back as the answer.
    #[arg(long, env = "SYNTHESIS_AGENT_COMMAND", conflicts_with = "acp_agent")]
    agent_command: Option<String>,

    /// Serve this Agent Client Protocol agent instead of `claude`: its command line, split as a shell
    /// would, e.g. 'gemini --experimental-acp'. One long-lived process and ACP session per chat session;
    /// --permission-mode and --allowed-tool answer its permission requests.
    #[arg(long, env = "SYNTHESIS_ACP_AGENT")]
    acp_agent: Option<String>,

    /// Address the agents' channel plugins connect back to (path /bridge).
    #[arg(long, env = "SYNTHESIS_WS_LISTEN", default_value = "127.0.0.1:18791")]
    ws_listen: SocketAddr,

    /// Directory for the bridge's state: which agent conversation each session continues.
    /// Default: $XDG_STATE_HOME/synthesis-bridge, or ~/.local/state/synthesis-bridge.
    #[arg(long, env = "SYNTHESIS_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// An agent process (`claude`, or the ACP agent) idle this long is stopped; its conversation resumes on
    /// the next turn.
    #[arg(long, env = "SYNTHESIS_PROCESS_IDLE", default_value = "30m", value_parser = parse_limit)]
    process_idle: Limit,

    /// A session unused this long is forgotten: its record leaves --state-dir and its process stops (its
    /// next turn starts a new conversation). `off` keeps sessions for ever.
    #[arg(long, env = "SYNTHESIS_SESSION_TTL", default_value = "30d", value_parser = parse_limit)]
    session_ttl: Limit,

    /// After a turn whose message reached Claude got no whole answer, the same message again (the client's
    /// retry, OpenClaw's continuation prompt included) within this long has Claude carry on with it rather
    /// than be asked twice; `off`: every turn is a new message.
    #[arg(long, env = "SYNTHESIS_RETRY_WINDOW", default_value = "3m", value_parser = parse_limit)]
    retry_window: Limit,

    /// How long the next message waits for Claude to finish the previous one (its Stop hook's report),
    /// counted from that one's push; past it the report is taken as lost.
    #[arg(long, env = "SYNTHESIS_PROMPT_END_WAIT", default_value = "5m", value_parser = humantime::parse_duration)]
    prompt_end_wait: Duration,

    /// At most this many agent processes at once; the longest-idle one makes room for a new session.
    /// When all are in a turn, new sessions get 503 with Retry-After.
    #[arg(long, env = "SYNTHESIS_MAX_PROCESSES", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_processes: u32,

    /// Claude Code's --permission-mode: dontAsk, acceptEdits, default, plan or bypassPermissions. Modes
    /// that ask block a headless process unless the tool is allowed with --allowed-tool. For an ACP agent,
    /// the answer to its permission requests: bypassPermissions allows all, acceptEdits edits, the
    /// others nothing but --allowed-tool.
    #[arg(long, env = "SYNTHESIS_PERMISSION_MODE", default_value = "dontAsk")]
    permission_mode: PermissionMode,

    /// A tool Claude may use without asking, besides the channel's reply tool, e.g. `Read` or
    /// `Bash(git diff:*)`. Repeat for several; in the environment, separate them with ','.
    #[arg(
        long = "allowed-tool",
        env = "SYNTHESIS_ALLOWED_TOOLS",
        value_delimiter = ','
    )]
    allowed_tools: Vec<String>,

    /// How long a new process has to get ready: a `claude` to get its channel plugin connected, an ACP
    /// agent to answer `initialize` and open its session.
    #[arg(long, env = "SYNTHESIS_READY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,

    /// A directory agents may work in (and below). Repeat for several; in the environment, separate them
    /// with ':'. The first is the workspace of requests that name none. Default: the current directory.
    #[arg(
        long = "workspace-root",
        env = "SYNTHESIS_WORKSPACE_ROOT",
        value_delimiter = ':'
    )]
    workspace_roots: Vec<PathBuf>,

    /// Require `Authorization: Bearer <KEY>` on /v1 requests. Required when --listen is not a loopback
    /// address.
    #[arg(long, env = "SYNTHESIS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Read the API key from this file (its first line), so that it is not on the command line, where
    /// every local user can see it.
    #[arg(long, env = "SYNTHESIS_API_KEY_FILE", conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,

    /// A web origin whose pages may use the bridge, e.g. `https://chat.example` (`*`: any). Repeat for
    /// several. Requests from any other web page (they carry an `Origin`) are refused.
    #[arg(
        long = "allow-origin",
        env = "SYNTHESIS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,

    /// A host name clients may reach the bridge by, besides the loopback names and --listen's address.
    /// Repeat for several. Requests naming another `Host` are refused (a web page could rebind its own
    /// name to the bridge). On an unspecified --listen address (0.0.0.0) without this, any host is taken.
    #[arg(
        long = "allow-host",
        env = "SYNTHESIS_ALLOW_HOST",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,

    /// The model id clients ask for (and /v1/models lists). Repeat for several.
    #[arg(
        long = "model-id",
        env = "SYNTHESIS_MODEL_ID",
        value_delimiter = ',',
        default_value = "claude"
    )]
    model_ids: Vec<String>,

    /// The session for requests that name none. Without it, such a request is a one-off turn: a fresh
    /// conversation, answered by a process of its own that stops after it, and not kept.
    #[arg(long, env = "SYNTHESIS_FALLBACK_SESSION")]
    fallback_session: Option<String>,

    /// How long a turn in which Claude called the client's tools waits for their
    /// results, which come with the session's next request; then each call gets an error and Claude goes
    /// on.
    #[arg(long, env = "SYNTHESIS_TOOL_RESULT_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    tool_result_timeout: Duration,

    /// Refuse requests that name no session (400 `no_session_key`, which says how to name one) rather
    /// than answer them as one-off turns.
    #[arg(long, env = "SYNTHESIS_REQUIRE_SESSION")]
    require_session: bool,

    /// Largest accepted request body, in bytes (suffixes K, M, KiB, MiB allowed).
    #[arg(long, env = "SYNTHESIS_MAX_BODY", default_value = "8MiB", value_parser = parse_size)]
    max_body: usize,

    /// How many turns of one session run at once; the others wait their turn in arrival order.
    #[arg(long, env = "SYNTHESIS_TURNS_PER_SESSION", default_value_t = 1)]
    turns_per_session: usize,

    /// How many turns of one session may wait; one more is refused with 429 and Retry-After.
    #[arg(long, env = "SYNTHESIS_QUEUE_DEPTH", default_value_t = 8)]
    queue_depth: usize,

    /// How long a turn may wait for its session before it is refused with 504 (`off`: no limit).
    #[arg(long, env = "SYNTHESIS_ADMISSION_TIMEOUT", default_value = "5m", value_parser = parse_limit)]
    admission_timeout: Limit,

    /// The most a turn may take, from its start to the end of its answer (`off`: no limit).
    #[arg(long, env = "SYNTHESIS_TURN_TIMEOUT", default_value = "30m", value_parser = parse_limit)]
    turn_timeout: Limit,

    /// The most time the agent may stay silent once its answer has started; heartbeats do not count
    /// (`off`: no limit).
    #[arg(long, env = "SYNTHESIS_IDLE_TIMEOUT", default_value = "10m", value_parser = parse_limit)]
    idle_timeout: Limit,

    /// After this much quiet, a stream gets an empty chunk so that clients keep waiting (`off`: never).
    #[arg(long, env = "SYNTHESIS_HEARTBEAT", default_value = "15s", value_parser = parse_limit)]
    heartbeat: Limit,

    /// At most this many client connections at once; one more is answered 503 and closed.
    #[arg(long, env = "SYNTHESIS_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// How long a client connection may take to send a request head (its first, or the next on a
    /// kept-alive connection) before it is closed.
    #[arg(long, env = "SYNTHESIS_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,

    /// How long to wait on shutdown for open responses to finish, e.g. `10s`.
    #[arg(long, env = "SYNTHESIS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,

    /// Log filter, e.g. `info` or `synthesis_bridge=debug`.
    #[arg(long, env = "SYNTHESIS_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Channel) => return channel(),
        None => {}
    }
    let args = cli.args;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One readable line (with its causes) rather than a debug dump: this is what an operator reads.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    raise_file_limit();
    let api_key = match &args.api_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --api-key-file {}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        None => args.api_key.clone(),
    }
    .filter(|key| !key.trim().is_empty());
    if !args.listen.ip().is_loopback() && api_key.is_none() {
        bail!(
            "--listen {} is reachable from other machines: set --api-key (or SYNTHESIS_API_KEY) so that only your clients can use it",
            args.listen
        );
    }

    let roots = if args.workspace_roots.is_empty() {
        vec![std::env::current_dir().context("cannot read the current directory")?]
    } else {
        args.workspace_roots.clone()
    };
    let workspaces =
        WorkspacePolicy::new(roots.clone(), &roots[0]).context("invalid --workspace-root")?;
    let fallback_session = args
        .fallback_session
        .as_deref()
        .map(SessionKey::new)
        .transpose()
        .context("invalid --fallback-session")?;
    let mut config = BridgeConfig::new(workspaces)
        .allowed_hosts(allowed_hosts(&args))
        .models(args.model_ids.clone())
        .api_key(api_key)
        .max_body_bytes(args.max_body)
        .fallback_session(fallback_session)
        .require_session(args.require_session);
    for origin in &args.allowed_origins {
        config = config.allow_origin(origin);
    }

    let backend = agent(&args).await?;
    let bridge = Bridge::builder(backend.clone(), config)
        .turns_per_session(args.turns_per_session)
        .queue_depth(args.queue_depth)
        .admission_timeout(args.admission_timeout.0)
        .turn_timeout(args.turn_timeout.0)
        .idle_timeout(args.idle_timeout.0)
        .heartbeat(args.heartbeat.0)
        .build();
    let signalled = shutdown_signal().context("cannot install the SIGINT/SIGTERM handlers")?;
    let listener = synthesis_bridge::server::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        roots = ?roots,
        models = ?args.model_ids,
        "bridge ready: POST http://{}/v1/chat/completions",
        listener.local_addr()?
    );

    let on_signal = {
        let bridge = bridge.clone();
        async move {
            signalled.await;
            tracing::info!("shutting down: ending open turns and stopping agents");
            bridge.begin_shutdown();
        }
    };
    let limits = synthesis_bridge::server::Limits::default()
        .max_connections(args.max_connections as usize)
        .header_read_timeout(args.header_timeout);
    synthesis_bridge::server::serve_with(listener, bridge, on_signal, args.shutdown_grace, limits)
        .await?;
    backend.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn agent(args: &Args) -> anyhow::Result<Arc<dyn AgentBackend>> {
    if let Some(command) = &args.agent_command {
        return Ok(Arc::new(CommandBackend::new("sh").arg("-c").arg(command)));
    }
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => default_state_dir()?,
    };
    let store = JsonFileStore::open(&state_dir)
        .await
        .with_context(|| format!("cannot open the state directory {}", state_dir.display()))?;
    // The channel plugin is this very binary.
    let this = std::env::current_exe().context("cannot find the bridge's own executable")?;
    let process_idle = args
        .process_idle
        .0
        .unwrap_or(Duration::from_secs(100 * 365 * 86_400));
    let spawner = Arc::new(ProcessSpawner::default());
    if let Some(command) = &args.acp_agent {
        let mut permissions = PermissionPolicy::new(match args.permission_mode {
            PermissionMode::BypassPermissions => Allow::Everything,
            PermissionMode::AcceptEdits => Allow::Edits,
            _ => Allow::Nothing,
        });
        for tool in &args.allowed_tools {
            permissions = permissions.allow_tool(tool);
        }
        let config = AcpConfig::from_command_line(command)?
            .permissions(permissions)
            .ready_timeout(args.ready_timeout)
            .max_processes(args.max_processes as usize)
            .session_ttl(args.session_ttl.0)
            .process_idle(process_idle);
        tracing::info!(agent = %command, state = %store.path().display(), "serving an ACP agent");
        return Ok(Arc::new(AcpBackend::new(config, spawner, Arc::new(store))));
    }
    let mut config = ClaudeCliConfig::new(this.to_string_lossy())
        .program(&args.claude_bin)
        .permission_mode(args.permission_mode)
        .ready_timeout(args.ready_timeout)
        .max_processes(args.max_processes as usize)
        .retry_window(args.retry_window.0)
        .session_ttl(args.session_ttl.0)
        .prompt_end_wait(args.prompt_end_wait)
        .tool_result_timeout(args.tool_result_timeout)
        .process_idle(process_idle);
    for tool in &args.allowed_tools {
        config = config.allow_tool(tool);
    }
    if args.claude_mode == ClaudeMode::StreamJson {
        tracing::info!(state = %store.path().display(), "claude runs in the stream-json mode");
        return Ok(Arc::new(ClaudeCliBackend::stream_json(
            config,
            spawner,
            Arc::new(store),
        )));
    }
    let transport = WsTransport::bind(args.ws_listen, WsConfig::default())
        .await
        .with_context(|| format!("cannot listen on --ws-listen {}", args.ws_listen))?;
    tracing::info!(
        ws = %transport.local_addr(),
        state = %store.path().display(),
        "claude processes connect back on ws://{}/bridge",
        transport.local_addr()
    );
    Ok(Arc::new(ClaudeCliBackend::new(
        config,
        spawner,
        Arc::new(transport),
        Arc::new(store),
    )))
}

/// The `Host` names the bridge answers to besides the loopback ones: --listen's address and --allow-host.
/// On an unspecified address the machine's names are not known: any, unless --allow-host says.
fn allowed_hosts(args: &Args) -> Option<Vec<String>> {
    let listen = args.listen.ip();
    if listen.is_unspecified() && args.allowed_hosts.is_empty() {
        return None;
    }
    let mut hosts = args.allowed_hosts.clone();
    if !listen.is_unspecified() {
        hosts.push(match listen {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        });
    }
    Some(hosts)
}

/// Raises the soft limit on open files to the hard one: every connection, agent and pipe takes one, and the
/// usual soft limit (1024) is reached long before the hard one.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the limit on open files");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the limit on open files"),
    }
}

fn default_state_dir() -> anyhow::Result<PathBuf> {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(state).join("synthesis-bridge"));
    }
    let home = std::env::var_os("HOME").context("set --state-dir (HOME is not set)")?;
    Ok(PathBuf::from(home).join(".local/state/synthesis-bridge"))
}

/// `bridge channel`. Logs go to standard error (standard output is the MCP stream), filtered by
/// `SYNTHESIS_LOG` (default `info`); Claude Code keeps them in its debug log.
fn channel() -> ExitCode {
    let filter = std::env::var("SYNTHESIS_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    synthesis_backend_claude_cli::plugin::run()
}

/// Resolves on the first SIGINT or SIGTERM. Both handlers are installed before this returns, so a signal
/// that arrives at any time after start-up is a graceful shutdown rather than the default instant death.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// A duration, or `off` for none.
#[derive(Debug, Clone, Copy)]
struct Limit(Option<Duration>);

/// `90s`, `5m`, `1h 30m`, … or `off`.
fn parse_limit(text: &str) -> Result<Limit, String> {
    match text.trim() {
        "off" | "none" => Ok(Limit(None)),
        text => match humantime::parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                Err("a zero duration would fail every turn: use `off` for no limit".to_owned())
            }
            Ok(duration) => Ok(Limit(Some(duration))),
            Err(error) => Err(format!(
                "{error}: use a duration such as 90s or 5m, or `off`"
            )),
        },
    }
}

/// `8388608`, `64K`, `8M`, `8MiB`, …
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 8388608 or 8MiB"))?;
    let multiplier = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}: use K, M or G")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text} is too large"))
}
