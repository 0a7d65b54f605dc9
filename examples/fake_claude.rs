//! `fake_claude`: a stand-in for the interactive `claude` CLI and its channel plugin, for hermetic tests and
//! load runs. It behaves as the real CLI was measured to (docs/claude-cli-measurements.md), minus the
//! model:
//!
//! - refuses `--session-id U` when a transcript of `U` exists and `--resume U` when none does (exit 1);
//! - draws the development-channels dialog (spaces as cursor moves, like the real TUI) and waits for `1`,
//!   read from a raw terminal;
//! - connects to `SYNTHESIS_WS_URL` and says hello with `SYNTHESIS_BRIDGE_TOKEN`;
//! - writes each prompt to `$CLAUDE_CONFIG_DIR/projects/<cwd>/<U>.jsonl` with its `promptId`, answers, then
//!   runs the `Stop` hooks from `--settings` with the hook JSON on standard input (`StopFailure` for a
//!   prompt whose model request failed);
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
//! | anything else | `echo: <message>` |
//!
//! The timestamp OpenClaw puts before each message (`[Sat 2026-11-21 05:18 UTC] `) is read past, as a
//! model would, so the table works the same behind OpenClaw.
//!
//! `FAKE_CLAUDE_STARTUP=login` stops at a login screen and never connects; `FAKE_CLAUDE_NO_PONG=1`
//! ignores the bridge's pings; `FAKE_CLAUDE_SKIP_HOOKS=1` runs no hooks, which only a measurement of what
//! they cost should want (`load --skip-stop-hooks`).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use synthesis_transport_ws::protocol::{BridgeFrame, PluginFrame};
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
    if args.resume.is_some() && !known {
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
        hooks: hook_commands(args.settings.as_ref(), "Stop"),
        failure_hooks: hook_commands(args.settings.as_ref(), "StopFailure"),
        prompts: Arc::new(AtomicUsize::new(prompts_in(&transcript))),
        skip_hooks: std::env::var_os("FAKE_CLAUDE_SKIP_HOOKS").is_some(),
        transcript,
    };
    let mut plugin_connected = true;
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
    hooks: Vec<String>,
    failure_hooks: Vec<String>,
    /// The prompts the transcript holds: counted once at start, then kept up to date.
    prompts: Arc<AtomicUsize>,
    /// `FAKE_CLAUDE_SKIP_HOOKS`: run no hooks (to measure what they cost; the bridge then learns of no
    /// turn's end but through its reply).
    skip_hooks: bool,
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
        let earlier = self.prompts.fetch_add(1, Ordering::SeqCst);
        let tag = format!(
            "<channel source=\"synthesis\" chat_id=\"{chat_id}\" message_id=\"{message_id}\">\n{content}\n</channel>"
        );
        self.record(json!({"promptId": prompt_id, "type": "user", "message": {"role": "user", "content": tag}, "sessionId": self.id}));

        let reply = |text: String, last: Option<bool>, id: bool| PluginFrame::Reply {
            content: text,
            is_final: last,
            message_id: id.then(|| message_id.clone()),
        };
        let content = without_openclaw_timestamp(&content);
        let (command, rest) = content.split_once(' ').unwrap_or((content, ""));
        let mut last_words = "done".to_owned();
        let mut failed = false;
        match command {
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
        let hooks = if failed {
            input["hook_event_name"] = json!("StopFailure");
            input["error"] = json!("unknown");
            &self.failure_hooks
        } else {
            &self.hooks
        };
        if !self.skip_hooks {
            for hook in hooks {
                run_hook(hook, &input).await;
            }
        }
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

async fn run_hook(command: &str, input: &Value) {
    let child = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(input.to_string().as_bytes()).await;
    }
    let _ = child.wait().await;
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

/// The commands of the `event` hooks in `--settings`.
fn hook_commands(settings: Option<&Value>, event: &str) -> Vec<String> {
    settings
        .and_then(|s| s["hooks"][event].as_array())
        .into_iter()
        .flatten()
        .filter_map(|matcher| matcher["hooks"].as_array())
        .flatten()
        .filter_map(|hook| hook["command"].as_str().map(str::to_owned))
        .collect()
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

/// `text` without the `[Sat 2026-11-21 05:18 UTC] ` that OpenClaw puts before each user message.
fn without_openclaw_timestamp(text: &str) -> &str {
    let Some((stamp, rest)) = text.strip_prefix('[').and_then(|t| t.split_once("] ")) else {
        return text;
    };
    let mut words = stamp.split(' ');
    let weekday = words.next().is_some_and(|w| w.len() == 3);
    let date = words
        .next()
        .is_some_and(|w| w.len() == 10 && w.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
    if weekday && date { rest } else { text }
}
