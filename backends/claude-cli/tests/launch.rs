//! The exact command line, environment and working directory of `claude` processes, with a mocked spawner
//! and transport.

use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex};

use synthesis_backend_claude_cli::{ClaudeCliBackend, ClaudeCliConfig, PermissionMode};
use synthesis_bridge::spawner::{ProcessSpec, SpawnError, Stdio};
use synthesis_bridge::transport::ChannelTicket;
use synthesis_bridge::{
    AgentBackend, BackendError, ClientTool, MemoryStore, MockChannelTransport, MockSpawner,
    SessionKey, SessionRecord, SessionStore, Turn,
};
use uuid::Uuid;

const ENDPOINT: &str = "ws://127.0.0.1:18791/bridge";
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// `--mcp-config`: the channel plugin as the only MCP server. Built as the backend builds it: with
/// serde_json's `preserve_order` (which a workspace build turns on for the ACP schema crate) keys keep
/// their order, without it they are sorted.
fn mcp_config() -> String {
    serde_json::json!({"mcpServers": {"synthesis": {"type": "stdio", "command": "/opt/bridge", "args": ["channel"]}}})
        .to_string()
}
const HOOKS: &str = "http://127.0.0.1:18791/hooks";

/// `--settings`: the three reporting hooks, each an `http` hook whose secret comes from the environment.
fn settings() -> String {
    let hook = serde_json::json!([{"hooks": [{
        "type": "http",
        "url": "http://127.0.0.1:18791/hooks?session=agent%3A%3Achat",
        "headers": {"Authorization": "Bearer ${SYNTHESIS_BRIDGE_TOKEN}"},
        "allowedEnvVars": ["SYNTHESIS_BRIDGE_TOKEN"],
        "timeout": 10,
    }]}]);
    serde_json::json!({"hooks": {"UserPromptSubmit": hook, "Stop": hook, "StopFailure": hook}})
        .to_string()
}

/// A spawner that keeps the spec it is asked to start, then fails the spawn.
fn capturing_spawner() -> (MockSpawner, Arc<Mutex<Option<ProcessSpec>>>) {
    let captured = Arc::new(Mutex::new(None));
    let mut spawner = MockSpawner::new();
    let sink = captured.clone();
    spawner.expect_spawn().times(1).returning(move |spec| {
        *sink.lock().unwrap() = Some(spec);
        Err(SpawnError::Io(std::io::Error::other("stopped by the test")))
    });
    (spawner, captured)
}

/// Runs one turn of `agent::chat` in `workspace`, which fails with the spawn, and returns what was to be
/// spawned.
async fn spawned_by_one_turn(
    backend: &ClaudeCliBackend,
    workspace: &Path,
    captured: &Mutex<Option<ProcessSpec>>,
) -> ProcessSpec {
    let turn = Turn::new(SessionKey::new("agent::chat").unwrap(), workspace, "hello");
    spawned_by(backend, turn, captured).await
}

/// Runs `turn`, which fails with the spawn, and returns what was to be spawned.
async fn spawned_by(
    backend: &ClaudeCliBackend,
    turn: Turn,
    captured: &Mutex<Option<ProcessSpec>>,
) -> ProcessSpec {
    let err = backend
        .run_turn(turn)
        .await
        .err()
        .expect("the spawn failed");
    assert!(
        matches!(&err, BackendError::Unavailable { message, .. } if message.contains("stopped by the test")),
        "{err:?}"
    );
    captured.lock().unwrap().take().expect("spawn was called")
}

/// Runs one turn of `agent::chat` in `workspace` and returns the spec the backend asked to spawn. The
/// spawn fails, so the turn fails, after the transport registration has been revoked.
async fn launched(
    config: ClaudeCliConfig,
    store: Arc<MemoryStore>,
    workspace: &Path,
) -> ProcessSpec {
    launched_for(config, store, workspace, Vec::new()).await
}

/// [`launched`], for a turn that offers the client's `tools`.
async fn launched_for(
    config: ClaudeCliConfig,
    store: Arc<MemoryStore>,
    workspace: &Path,
    tools: Vec<ClientTool>,
) -> ProcessSpec {
    let (spawner, captured) = capturing_spawner();
    let mut transport = MockChannelTransport::new();
    transport
        .expect_endpoint()
        .return_const(ENDPOINT.to_owned());
    transport
        .expect_hook_endpoint()
        .return_const(Some(HOOKS.to_owned()));
    transport
        .expect_register()
        .times(1)
        .returning(|session| ChannelTicket {
            session: session.clone(),
            token: TOKEN.to_owned(),
        });
    transport
        .expect_revoke()
        .times(1)
        .withf(|ticket| ticket.token == TOKEN)
        .return_const(());
    let backend = ClaudeCliBackend::new(config, Arc::new(spawner), Arc::new(transport), store);
    let mut turn = Turn::new(SessionKey::new("agent::chat").unwrap(), workspace, "hello");
    turn.meta.tools = tools;
    spawned_by(&backend, turn, &captured).await
}

fn config() -> ClaudeCliConfig {
    ClaudeCliConfig::new("/opt/bridge").program("/opt/claude")
}

fn strings(values: &[OsString]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect()
}

fn env(spec: &ProcessSpec) -> Vec<(String, String)> {
    spec.env
        .iter()
        .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
        .collect()
}

fn expected_args(session_flag: &str, id: Uuid, mode: &str, tools: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--mcp-config",
        &mcp_config(),
        "--strict-mcp-config",
        "--dangerously-load-development-channels",
        "server:synthesis",
        "--settings",
        &settings(),
        session_flag,
        &id.to_string(),
        "--permission-mode",
        mode,
        "--allowedTools",
        "mcp__synthesis__reply",
    ]
    .map(String::from)
    .to_vec();
    args.extend(tools.iter().map(|t| t.to_string()));
    args
}

#[tokio::test]
async fn a_first_launch_starts_a_new_conversation_in_the_workspace() {
    let workspace = tempfile::tempdir().unwrap();
    let claude_home = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let config = config().env("CLAUDE_CONFIG_DIR", claude_home.path());
    let spec = launched(config, store.clone(), workspace.path()).await;

    assert_eq!(spec.program, "/opt/claude");
    let args = strings(&spec.args);
    let id: Uuid = args[8].parse().expect("a fresh conversation id");
    assert_eq!(args, expected_args("--session-id", id, "dontAsk", &[]));
    assert!(!args.iter().any(|a| a == "--channels"));
    assert_eq!(spec.cwd, workspace.path());
    assert_eq!(spec.stdio, Stdio::terminal());
    let (no_proxy, env): (Vec<_>, Vec<_>) = env(&spec)
        .into_iter()
        .partition(|(key, _)| key.eq_ignore_ascii_case("no_proxy"));
    assert_eq!(
        env,
        vec![
            (
                "CLAUDE_CONFIG_DIR".into(),
                claude_home.path().display().to_string()
            ),
            ("SYNTHESIS_WS_URL".into(), ENDPOINT.into()),
            ("SYNTHESIS_OPENCLAW_SESSION".into(), "agent::chat".into()),
            ("SYNTHESIS_CLAUDE_SESSION".into(), id.to_string()),
            ("SYNTHESIS_BRIDGE_TOKEN".into(), TOKEN.into()),
        ]
    );
    // Claude Code's hook client would send the reports through a proxy in the environment, even to
    // loopback.
    assert_eq!(no_proxy.len(), 2, "{no_proxy:?}");
    for (_, value) in no_proxy {
        assert!(value.ends_with("127.0.0.1,localhost,::1"), "{value}");
    }
    assert_eq!(strings(&spec.env_remove), vec!["SYNTHESIS_API_KEY"]);
}

#[tokio::test]
async fn the_clients_tools_go_to_the_plugin_and_are_allowed() {
    let workspace = tempfile::tempdir().unwrap();
    let weather = ClientTool::new(
        "get_weather",
        serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    )
    .with_description("The weather in a city");
    let spec = launched_for(
        config(),
        Arc::new(MemoryStore::new()),
        workspace.path(),
        vec![weather],
    )
    .await;
    let args = strings(&spec.args);
    let allowed = args.iter().position(|arg| arg == "--allowedTools").unwrap();
    assert_eq!(
        args[allowed + 1..allowed + 3],
        ["mcp__synthesis__reply", "mcp__synthesis__get_weather"]
    );
    let (_, tools) = env(&spec)
        .into_iter()
        .find(|(key, _)| key == "SYNTHESIS_CLIENT_TOOLS")
        .expect("the tools are in the environment");
    let tools: serde_json::Value = serde_json::from_str(&tools).unwrap();
    assert_eq!(tools[0]["name"], "get_weather");
    assert_eq!(tools[0]["description"], "The weather in a city");
    assert_eq!(
        tools[0]["inputSchema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(tools[0]["annotations"]["readOnlyHint"], true);
}

#[tokio::test]
async fn tools_too_big_for_the_plugins_environment_are_refused_before_anything_starts() {
    let workspace = tempfile::tempdir().unwrap();
    let mut transport = MockChannelTransport::new();
    transport
        .expect_hook_endpoint()
        .return_const(Some(HOOKS.to_owned()));
    let backend = ClaudeCliBackend::new(
        config(),
        Arc::new(MockSpawner::new()),
        Arc::new(transport),
        Arc::new(MemoryStore::new()),
    );
    let huge = ClientTool::new("huge", serde_json::json!({"type": "object"}))
        .with_description("x".repeat(130 * 1024));
    let mut turn = Turn::new(
        SessionKey::new("agent::chat").unwrap(),
        workspace.path(),
        "hi",
    );
    turn.meta.tools = vec![huge];
    let err = backend.run_turn(turn).await.err().expect("refused");
    assert!(
        matches!(&err, BackendError::Rejected(message) if message.contains("stream-json")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_conversation_with_a_transcript_is_resumed() {
    let workspace = tempfile::tempdir().unwrap();
    let claude_home = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut record = SessionRecord::new(SessionKey::new("agent::chat").unwrap(), workspace.path());
    record.started = true;
    let id = Uuid::new_v4();
    record.conversation_id = Some(id.to_string());
    store.put(record).await.unwrap();
    // Claude Code keeps transcripts per project directory; any of them will do for --resume.
    let project = claude_home.path().join("projects").join("-somewhere-else");
    std::fs::create_dir_all(&project).unwrap();
    let conversation = r#"{"type":"user","promptId":"p","message":{"role":"user","content":"hi"}}"#;
    std::fs::write(
        project.join(format!("{id}.jsonl")),
        format!("{{}}\n{conversation}\n"),
    )
    .unwrap();

    let config = config().env("CLAUDE_CONFIG_DIR", claude_home.path());
    let spec = launched(config, store, workspace.path()).await;
    assert_eq!(
        strings(&spec.args),
        expected_args("--resume", id, "dontAsk", &[])
    );
    assert!(env(&spec).contains(&("SYNTHESIS_CLAUDE_SESSION".into(), id.to_string())));
}

#[tokio::test]
async fn a_started_conversation_without_a_transcript_is_started_again_not_resumed() {
    // Claude Code writes no transcript for a process that never got a prompt; --resume would exit 1.
    let workspace = tempfile::tempdir().unwrap();
    let claude_home = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut record = SessionRecord::new(SessionKey::new("agent::chat").unwrap(), workspace.path());
    record.started = true;
    let id = Uuid::new_v4();
    record.conversation_id = Some(id.to_string());
    store.put(record).await.unwrap();
    let config = config().env("CLAUDE_CONFIG_DIR", claude_home.path());
    let spec = launched(config, store, workspace.path()).await;
    assert_eq!(
        strings(&spec.args),
        expected_args("--session-id", id, "dontAsk", &[])
    );
}

#[tokio::test]
async fn a_conversation_whose_transcript_holds_no_conversation_is_replaced_by_a_new_one() {
    // Claude Code was killed between creating the transcript and writing the conversation: neither
    // --resume nor --session-id accepts that id any more.
    let workspace = tempfile::tempdir().unwrap();
    let claude_home = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let session = SessionKey::new("agent::chat").unwrap();
    let mut record = SessionRecord::new(session.clone(), workspace.path());
    record.started = true;
    let old = Uuid::new_v4();
    record.conversation_id = Some(old.to_string());
    store.put(record).await.unwrap();
    let project = claude_home.path().join("projects").join("-ws");
    std::fs::create_dir_all(&project).unwrap();
    let metadata = r#"{"type":"queue-operation","operation":"enqueue"}"#;
    std::fs::write(
        project.join(format!("{old}.jsonl")),
        format!("{metadata}\n"),
    )
    .unwrap();

    let config = config().env("CLAUDE_CONFIG_DIR", claude_home.path());
    let spec = launched(config, store.clone(), workspace.path()).await;
    let args = strings(&spec.args);
    let new: Uuid = args[8].parse().unwrap();
    assert_ne!(new, old);
    assert_eq!(args, expected_args("--session-id", new, "dontAsk", &[]));
}

#[tokio::test]
async fn each_permission_mode_is_passed_with_the_reply_tool_and_the_extra_tools() {
    let workspace = tempfile::tempdir().unwrap();
    let claude_home = tempfile::tempdir().unwrap();
    for mode in PermissionMode::ALL {
        let store = Arc::new(MemoryStore::new());
        let mut record =
            SessionRecord::new(SessionKey::new("agent::chat").unwrap(), workspace.path());
        let id = Uuid::new_v4();
        record.conversation_id = Some(id.to_string());
        store.put(record).await.unwrap();
        let config = config()
            .env("CLAUDE_CONFIG_DIR", claude_home.path())
            .permission_mode(mode)
            .allow_tool("Read")
            .allow_tool("Bash(git diff:*)");
        let spec = launched(config, store, workspace.path()).await;
        assert_eq!(
            strings(&spec.args),
            expected_args(
                "--session-id",
                id,
                mode.as_str(),
                &["Read", "Bash(git diff:*)"]
            ),
            "{mode}"
        );
    }
}

#[test]
fn permission_modes_parse_from_their_cli_names() {
    for mode in PermissionMode::ALL {
        assert_eq!(mode.as_str().parse::<PermissionMode>(), Ok(mode));
    }
    let err = "yolo".parse::<PermissionMode>().unwrap_err();
    assert!(err.to_string().contains("dontAsk"), "{err}");
}

/// Runs one turn of `agent::chat` in the stream-json mode and returns the spec the backend asked to spawn.
async fn launched_stream_json(
    config: ClaudeCliConfig,
    store: Arc<MemoryStore>,
    workspace: &Path,
) -> ProcessSpec {
    let (spawner, captured) = capturing_spawner();
    let backend = ClaudeCliBackend::stream_json(config, Arc::new(spawner), store);
    spawned_by_one_turn(&backend, workspace, &captured).await
}

#[tokio::test]
async fn stream_json_runs_print_mode_on_pipes_with_permissions_asked_over_stdio() {
    let workspace = tempfile::tempdir().unwrap();
    let claude_home = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let config = config()
        .env("CLAUDE_CONFIG_DIR", claude_home.path())
        .permission_mode(PermissionMode::AcceptEdits)
        .allow_tool("Read")
        .extra_arg("--model")
        .extra_arg("opus");
    let spec = launched_stream_json(config, store.clone(), workspace.path()).await;
    let args = strings(&spec.args);
    let id: Uuid = args[8].parse().expect("a fresh conversation id");
    let expected: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--session-id",
        &id.to_string(),
        "--permission-mode",
        "acceptEdits",
        "--permission-prompt-tool",
        "stdio",
        "--allowedTools",
        "Read",
        "--model",
        "opus",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(args, expected);
    assert_eq!(spec.stdio, Stdio::Pipes);
    assert_eq!(spec.cwd, workspace.path());
    // No plugin, hooks or channel: nothing of the channel mode's environment.
    assert!(
        env(&spec)
            .iter()
            .all(|(key, _)| !key.starts_with("SYNTHESIS_")),
        "{:?}",
        env(&spec)
    );
    assert_eq!(strings(&spec.env_remove), vec!["SYNTHESIS_API_KEY"]);
    let record = store
        .get(&SessionKey::new("agent::chat").unwrap())
        .await
        .unwrap();
    assert_eq!(
        record, None,
        "nothing is saved for a process that never ran"
    );
}

#[tokio::test]
async fn a_stored_id_claude_code_cannot_take_starts_a_new_conversation() {
    // Another backend (an ACP agent) names its conversations as it likes; Claude Code takes uuids only.
    let workspace = tempfile::tempdir().unwrap();
    let claude_home = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut record = SessionRecord::new(SessionKey::new("agent::chat").unwrap(), workspace.path());
    record.conversation_id = Some("sess_01JABCDEF".to_owned());
    record.started = true;
    store.put(record).await.unwrap();
    let config = config().env("CLAUDE_CONFIG_DIR", claude_home.path());
    let spec = launched_stream_json(config, store, workspace.path()).await;
    let args = strings(&spec.args);
    assert_eq!(args[7], "--session-id");
    let _: Uuid = args[8].parse().expect("a new uuid");
}
