//! `fake_claude`: a stand-in for the interactive `claude` CLI and its channel plugin, for hermetic tests and
//! load runs. It behaves as the real CLI was measured to (docs/claude-cli-measurements.md), minus the
//! model:
//!
//! - refuses `--session-id U` when a transcript of `U` exists and `--resume U` when none does, or when the
//!   transcript holds the word `unresumable` (exit 1, "No conversation found");
//! - draws the development-channels dialog (spaces as cursor moves, like the real TUI) and waits for `1`,
//!   read from a raw terminal;
//! - connects to `SYNTHESIS_WS_URL` and says hello with `SYNTHESIS_BRIDGE_TOKEN`;
//! - posts each prompt to the `UserPromptSubmit` hooks of `--settings` (`http` hooks, the header values'
//!   `$VAR`s taken from the environment for the names in `allowedEnvVars`), drops a prompt a hook blocks,
//!   writes the others to `$CLAUDE_CONFIG_DIR/projects/<cwd>/<U>.jsonl` with their `promptId`, answers, then
//!   posts the `Stop` hooks (`StopFailure` for a prompt whose model request failed);
//! - ESC interrupts the prompt in progress (no `Stop` follows); SIGTERM prints the resume hint, exits 143.
//!
//! What it answers depends on the message:
//!
//! | message | answer |
//! |---|---|
//! | `slow MS TEXT` | `echo: TEXT` after MS milliseconds |
//! | `stream TEXT…` | each word as its own `reply` frame with `final: false`, then an empty final one |
//! | `stamp N` | N `final: false` replies 2 ms apart, each the time it was sent (µs since the epoch) and a space |
//! | `plain TEXT` | no reply tool: `TEXT` is only the `Stop` hook's `last_assistant_message` |
//! | `legacy TEXT` | a seed-era reply: no `message_id`, no `final` |
//! | `error TEXT` | an `error` frame |
//! | `api-error TEXT` | the request to the model fails: the `StopFailure` hooks run instead of `Stop` |
//! | `history` | `turn N of conversation U`, N counting the transcript's prompts |
//! | `pid` | its process id |
//! | `crash` | prints `fatal: simulated crash` and exits 3 |
//! | `silent` | nothing, until ESC |
//! | `lost TEXT` | the first push of it is dropped (and noted in `$CLAUDE_CONFIG_DIR/dropped-pushes.log`), as Claude Code drops a push during an open tool call; then `echo: lost TEXT` |
//! | `late MS TEXT` | its prompt starts MS milliseconds after the push; then `echo: late MS TEXT` |
//! | a note with `retry_of: M` in its meta | `continued: TEXT`, TEXT being message M's (not run again) |
//! | anything else | `echo: <message>` |
//!
//! The timestamp OpenClaw puts before each message (`[Sat 2026-11-21 05:18 UTC] `) is read past, as a
//! model would, so the table works the same behind OpenClaw.
//!
//! `FAKE_CLAUDE_STARTUP=login` stops at a login screen and never connects; `FAKE_CLAUDE_NO_PONG=1`
//! ignores the bridge's pings; `FAKE_CLAUDE_NO_HOOKS=1` runs no hooks, as Claude Code with
//! `disableAllHooks`.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use synthesis_bridge::openai::extract::without_openclaw_timestamp;
use synthesis_claude_channel_protocol::{BridgeFrame, PluginFrame};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Default)]
struct Args {
    start: Option<String>,
    resume: Option<String>,
    settings: Option<Value>,
    dev_channels: bool,
}

fn parse_args() -> Args {
    let mut args = Args::default();
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--session-id" => args.start = words.next(),
            "--resume" => args.resume = words.next(),
            "--settings" => {
                args.settings = words.next().and_then(|s| serde_json::from_str(&s).ok())
            }
            "--dangerously-load-development-channels" => {
                args.dev_channels = true;
                words.next();
            }
            _ => {}
        }
    }
    args
}

fn say(text: &str) {
    let mut out = std::io::stdout();
    let _ = out.write_all(text.replace('\n', "\r\n").as_bytes());
    let _ = out.flush();
}

/// Spaces drawn as cursor moves, as the real TUI draws them.
fn say_tui(text: &str) {
    say(&text.replace(' ', "\x1b[1C"));
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let config_dir =
        PathBuf::from(std::env::var_os("CLAUDE_CONFIG_DIR").context("set CLAUDE_CONFIG_DIR")?);
    let cwd = std::env::current_dir()?;
    let id = args
        .start
        .clone()
        .or(args.resume.clone())
        .context("--session-id or --resume")?;
    let found = find_transcript(&config_dir, &id);
    let known = found.is_some();
    // A resumed conversation goes on in its transcript, wherever it was started.
    let transcript = found.unwrap_or_else(|| {
        config_dir
            .join("projects")
            .join(cwd.to_string_lossy().replace(['/', '.'], "-"))
            .join(format!("{id}.jsonl"))
    });
    if args.start.is_some() && known {
        say(&format!("Error: Session ID {id} is already in use.\n"));
        std::process::exit(1);
    }
    let mut keys = keyboard();
    if args.dev_channels {
        say_tui(
            "\n WARNING: Loading development channels\n\n ❯ 1. I am using this for local development\n   2. Exit\n\n Enter to confirm · Esc to cancel\n",
        );
        loop {
            match keys.recv().await {
                Some(b'1') => break,
                Some(b'2') | None => std::process::exit(1),
                Some(_) => {}
            }
        }
    }
    // A transcript Claude Code cannot resume though it holds a conversation (seen only as "No
    // conversation found"): the word `unresumable` in it stands for whatever made it so.
    let unresumable = found_path_holds(&transcript, "unresumable");
    if args.resume.is_some() && (!known || unresumable) {
        say(&format!("No conversation found with session ID: {id}\n"));
        std::process::exit(1);
    }
    if std::env::var("FAKE_CLAUDE_STARTUP").as_deref() == Ok("login") {
        say_tui("Select login method:\n ❯ 1. Claude account with subscription\n");
        std::future::pending::<()>().await;
    }

    let url = std::env::var("SYNTHESIS_WS_URL")?;
    // No Nagle, as the real channel plugin: replies leave at once.
    let (socket, _) = tokio_tungstenite::connect_async_with_config(&url, None, true).await?;
    let (mut sink, mut source) = socket.split();
    let hello = PluginFrame::Hello {
        pid: Some(std::process::id()),
        openclaw_session: std::env::var("SYNTHESIS_OPENCLAW_SESSION")?,
        token: std::env::var("SYNTHESIS_BRIDGE_TOKEN").ok(),
    };
    sink.send(Message::text(hello.to_text())).await?;
    say("> ");

    let mut terminate = signal(SignalKind::terminate())?;
    let ignore_pings = std::env::var("FAKE_CLAUDE_NO_PONG").is_ok();
    let session = Session {
        id: id.clone(),
        cwd,
        // As with `disableAllHooks` in Claude Code's settings.
        hooks: Arc::new(Hooks::from_settings(
            args.settings
                .as_ref()
                .filter(|_| std::env::var_os("FAKE_CLAUDE_NO_HOOKS").is_none()),
        )),
        prompts: Arc::new(AtomicUsize::new(prompts_in(&transcript))),
        seen: Arc::default(),
        transcript,
    };
    let mut plugin_connected = true;
    // `lost` messages whose first push was dropped.
    let mut dropped: Vec<String> = Vec::new();
    let mut queue: VecDeque<(String, Value)> = VecDeque::new();
    let mut busy: Option<tokio::task::JoinHandle<()>> = None;
    // Whether the prompt in progress is still being answered (ESC interrupts it) rather than running its
    // Stop hooks (the prompt is over; ESC does nothing).
    let answering = Arc::new(AtomicBool::new(false));
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
    loop {
        if busy.is_none()
            && let Some((content, meta)) = queue.pop_front()
        {
            answering.store(true, Ordering::SeqCst);
            busy = Some(tokio::spawn(session.clone().answer(
                content,
                meta,
                out_tx.clone(),
                answering.clone(),
            )));
        }
        tokio::select! {
            _ = terminate.recv() => {
                say(&format!("\nResume this session with:\nclaude --resume {id}\n"));
                std::process::exit(143);
            }
            key = keys.recv() => match key {
                Some(0x1b) => if answering.load(Ordering::SeqCst) && let Some(task) = busy.take() {
                    task.abort();
                    say("\n  ⎿  Interrupted · What should Claude do instead?\n");
                },
                Some(_) => {}
                None => return Ok(()),
            },
            outgoing = out_rx.recv() => match outgoing.expect("we hold a sender") {
                Outgoing::Frame(frame) => sink.send(Message::text(frame.to_text())).await?,
                Outgoing::Flushed(written) => {
                    let _ = written.send(());
                }
            },
            done = async { busy.as_mut().expect("guarded").await }, if busy.is_some() => {
                busy = None;
                done?;
            }
            message = source.next(), if plugin_connected => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    // Like Claude Code, live on without the plugin, until stopped.
                    _ => {
                        plugin_connected = false;
                        continue;
                    }
                };
                match serde_json::from_str::<BridgeFrame>(text.as_str()) {
                    Ok(BridgeFrame::Ping) if !ignore_pings => sink.send(Message::text(PluginFrame::Pong.to_text())).await?,
                    Ok(BridgeFrame::Inbound(message)) => {
                        if without_openclaw_timestamp(&message.content).starts_with("lost ")
                            && !dropped.contains(&message.meta.message_id)
                        {
                            dropped.push(message.meta.message_id);
                            // Where a test can see that the push came (and went).
                            let _ = std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(config_dir.join("dropped-pushes.log"))
                                .and_then(|mut log| writeln!(log, "{}", message.content));
                            continue;
                        }
                        let meta = serde_json::to_value(&message.meta)?;
                        queue.push_back((message.content, meta));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    transcript: PathBuf,
    cwd: PathBuf,
    hooks: Arc<Hooks>,
    /// The prompts the transcript holds: counted once at start, then kept up to date.
    prompts: Arc<AtomicUsize>,
    /// The messages taken up so far (a `late` one is late only the first time).
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Session {
    /// Works on one prompt: records it, answers it, runs the Stop hooks. The frames to send go out
    /// through `out` as they are made.
    async fn answer(
        self,
        content: String,
        meta: Value,
        out: mpsc::UnboundedSender<Outgoing>,
        answering: Arc<AtomicBool>,
    ) {
        let send = |frame: PluginFrame| {
            let _ = out.send(Outgoing::Frame(frame));
        };
        let message_id = meta["message_id"].as_str().unwrap_or_default().to_owned();
        let chat_id = meta["chat_id"].as_str().unwrap_or_default();
        let prompt_id = uuid::Uuid::new_v4().to_string();
        let tag = format!(
            "<channel source=\"synthesis\" chat_id=\"{chat_id}\" message_id=\"{message_id}\">\n{content}\n</channel>"
        );
        let first_time = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let first = !seen.contains(&message_id);
            seen.push(message_id.clone());
            first
        };
        if let Some(delay) = without_openclaw_timestamp(&content)
            .strip_prefix("late ")
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .filter(|_| first_time)
        {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let submitted = json!({
            "session_id": self.id,
            "transcript_path": self.transcript,
            "cwd": self.cwd,
            "prompt_id": prompt_id,
            "hook_event_name": "UserPromptSubmit",
            "prompt": tag,
        });
        // A blocked prompt is erased: nothing of it reaches the conversation, and no Stop follows.
        if self
            .hooks
            .post("UserPromptSubmit", &submitted)
            .await
            .iter()
            .any(|answer| answer["decision"] == "block")
        {
            answering.store(false, Ordering::SeqCst);
            return;
        }
        let earlier = self.prompts.fetch_add(1, Ordering::SeqCst);
        self.record(json!({"promptId": prompt_id, "type": "user", "message": {"role": "user", "content": tag}, "sessionId": self.id}));

        let reply = |text: String, last: Option<bool>, id: bool| PluginFrame::Reply {
            content: text,
            is_final: last,
            message_id: id.then(|| message_id.clone()),
        };
        // A note that carries on with an earlier message: answered as that message, which is not run again.
        let original = meta["retry_of"]
            .as_str()
            .and_then(|original| self.content_of(original));
        let content = without_openclaw_timestamp(&content);
        let (command, rest) = match &original {
            Some(_) => ("continued", ""),
            None => content.split_once(' ').unwrap_or((content, "")),
        };
        let mut last_words = "done".to_owned();
        let mut failed = false;
        let mut skip_stop = false;
        match command {
            "continued" => {
                let original = original.unwrap_or_default();
                send(reply(format!("continued: {original}"), Some(true), true));
            }
            "slow" => {
                let (ms, text) = rest.split_once(' ').unwrap_or((rest, ""));
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
                send(reply(format!("echo: {text}"), Some(true), true));
            }
            "stream" => {
                for word in rest.split_inclusive(' ') {
                    send(reply(word.to_owned(), Some(false), true));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                send(reply(String::new(), Some(true), true));
            }
            "stamp" => {
                for _ in 0..rest.parse().unwrap_or(10) {
                    let sent = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    send(reply(format!("{} ", sent.as_micros()), Some(false), true));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                send(reply(String::new(), Some(true), true));
            }
            "plain" => last_words = rest.to_owned(),
            // A prompt whose `Stop` report is lost.
            "nostop" => {
                send(reply(format!("echo: {rest}"), Some(true), true));
                skip_stop = true;
            }
            "legacy" => {
                send(reply(format!("echo: {rest}"), None, false));
            }
            "error" => {
                send(PluginFrame::Error {
                    message: rest.to_owned(),
                });
            }
            // What Claude Code 2.1.329 reports after a 400 from the API (docs/claude-cli-measurements.md).
            "api-error" => {
                last_words = format!("API Error: 400 {rest}");
                failed = true;
            }
            "history" => {
                send(reply(
                    format!("turn {} of conversation {}", earlier + 1, self.id),
                    Some(true),
                    true,
                ));
            }
            "pid" => {
                send(reply(std::process::id().to_string(), Some(true), true));
            }
            "crash" => {
                say("\nfatal: simulated crash\n");
                std::process::exit(3);
            }
            "silent" => std::future::pending::<()>().await,
            _ => {
                send(reply(format!("echo: {content}"), Some(true), true));
            }
        }
        self.record(json!({"promptId": prompt_id, "type": "assistant", "message": {"role": "assistant", "content": last_words}}));
        answering.store(false, Ordering::SeqCst);
        // The real plugin's reply tool returns once its frame is written, and Claude Code runs the Stop
        // hooks after that: the frames above leave before any hook starts.
        let (written, flushed) = tokio::sync::oneshot::channel();
        if out.send(Outgoing::Flushed(written)).is_ok() {
            let _ = flushed.await;
        }
        let mut input = json!({
            "session_id": self.id,
            "transcript_path": self.transcript,
            "cwd": self.cwd,
            "prompt_id": prompt_id,
            "hook_event_name": "Stop",
            "stop_hook_active": false,
            "last_assistant_message": last_words,
        });
        let event = if failed {
            input["hook_event_name"] = json!("StopFailure");
            input["error"] = json!("unknown");
            "StopFailure"
        } else {
            "Stop"
        };
        if !skip_stop {
            self.hooks.post(event, &input).await;
        }
    }

    /// The content of message `message_id`, from the transcript.
    fn content_of(&self, message_id: &str) -> Option<String> {
        let records = std::fs::read_to_string(&self.transcript).ok()?;
        let needle = format!("message_id=\"{message_id}\"");
        records
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|record| record["message"]["content"].as_str().map(str::to_owned))
            .find(|tag| tag.contains(&needle))
            .and_then(|tag| {
                let body = tag.split_once(">\n")?.1;
                Some(body.strip_suffix("\n</channel>").unwrap_or(body).to_owned())
            })
    }

    fn record(&self, record: Value) {
        if let Some(dir) = self.transcript.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.transcript)
            .expect("transcript");
        let _ = writeln!(file, "{record}");
    }
}

/// Whether the file at `path` exists and holds `word`.
fn found_path_holds(path: &Path, word: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains(word))
}

/// How many channel prompts a transcript holds.
fn prompts_in(transcript: &Path) -> usize {
    std::fs::read_to_string(transcript)
        .map(|text| {
            text.lines()
                .filter(|l| l.contains("\"promptId\"") && l.contains("<channel"))
                .count()
        })
        .unwrap_or(0)
}

/// What the answering task hands the connection's writer.
enum Outgoing {
    /// A frame to send.
    Frame(PluginFrame),
    /// Tell the answering task once every frame before this one has been written.
    Flushed(tokio::sync::oneshot::Sender<()>),
}

/// The `http` hooks of `--settings`, and the one keep-alive connection Claude Code posts them on.
#[derive(Debug)]
struct Hooks {
    settings: Value,
    connection: tokio::sync::Mutex<Option<HookConnection>>,
}

type HookConnection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Hooks {
    fn from_settings(settings: Option<&Value>) -> Self {
        Self {
            settings: settings.cloned().unwrap_or_default(),
            connection: tokio::sync::Mutex::default(),
        }
    }

    /// Posts `input` to every `event` hook and returns the JSON answers. A hook that fails is skipped, as
    /// Claude Code goes on after a failed hook.
    async fn post(&self, event: &str, input: &Value) -> Vec<Value> {
        let hooks: Vec<Value> = self.settings["hooks"][event]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|matcher| matcher["hooks"].as_array())
            .flatten()
            .filter(|hook| hook["type"] == "http")
            .cloned()
            .collect();
        let mut answers = Vec::new();
        for hook in hooks {
            if let Some(answer) = self.post_one(&hook, input).await {
                answers.push(answer);
            }
        }
        answers
    }

    async fn post_one(&self, hook: &Value, input: &Value) -> Option<Value> {
        let url: http::Uri = hook["url"].as_str()?.parse().ok()?;
        let allowed: Vec<&str> = hook["allowedEnvVars"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut request = http::Request::post(url.path_and_query()?.as_str())
            .header(http::header::HOST, url.authority()?.as_str())
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in hook["headers"].as_object().into_iter().flatten() {
            request = request.header(name.as_str(), interpolate(value.as_str()?, &allowed));
        }
        let request = request
            .body(Full::new(Bytes::from(input.to_string())))
            .ok()?;
        let mut connection = self.connection.lock().await;
        let open = match connection.take() {
            Some(open) if !open.is_closed() => open,
            _ => {
                let stream = tokio::net::TcpStream::connect(url.authority()?.as_str())
                    .await
                    .ok()?;
                let _ = stream.set_nodelay(true);
                let (open, driver) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .ok()?;
                tokio::spawn(driver);
                open
            }
        };
        let mut open = open;
        let response = open.send_request(request).await.ok()?;
        *connection = Some(open);
        drop(connection);
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }
}

/// A header value with `$NAME` and `${NAME}` replaced from the environment, for the allowed names only.
fn interpolate(value: &str, allowed: &[&str]) -> String {
    let mut out = value.to_owned();
    for name in allowed {
        let set = std::env::var(name).unwrap_or_default();
        out = out
            .replace(&format!("${{{name}}}"), &set)
            .replace(&format!("${name}"), &set);
    }
    out
}

fn find_transcript(config_dir: &Path, id: &str) -> Option<PathBuf> {
    std::fs::read_dir(config_dir.join("projects"))
        .ok()?
        .filter_map(Result::ok)
        .map(|project| project.path().join(format!("{id}.jsonl")))
        .find(|path| path.is_file())
}

/// Keys typed at the terminal, one byte at a time (the terminal is put in raw mode, as the TUI does).
fn keyboard() -> mpsc::UnboundedReceiver<u8> {
    let stdin = std::io::stdin();
    if let Ok(mut mode) = nix::sys::termios::tcgetattr(stdin.as_fd()) {
        nix::sys::termios::cfmakeraw(&mut mode);
        let _ =
            nix::sys::termios::tcsetattr(stdin.as_fd(), nix::sys::termios::SetArg::TCSANOW, &mode);
    }
    let (keys, typed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while let Ok(read @ 1..) = stdin.read(&mut buffer).await {
            for &byte in &buffer[..read] {
                let _ = keys.send(byte);
            }
        }
    });
    typed
}
