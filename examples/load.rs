//! `load`: measures the real `bridge` binary under load. It starts the bridge with `fake_claude` as its agent
//! (one real process per session under a pseudo-terminal, a real WebSocket each, real HTTP), then runs
//! `--sessions` sessions of `--turns` streamed turns each, all sessions at once and each session's turns one
//! after another, and reports:
//!
//! - turns/s and p50/p99 turn latency (request sent to `data: [DONE]` read);
//! - first-turn latency, which includes starting the session's agent;
//! - the bridge's own CPU time per turn (its process only, from /proc), its resident memory with every
//!   session live and at its peak, and per idle session;
//! - how late content deltas arrive: `fake_claude`'s `stamp` replies carry the time they were sent;
//! - errors. Every reply is checked: a fast wrong answer is an error.
//!
//! ```sh
//! cargo build --release --workspace --examples
//! target/release/examples/load --sessions 50 --turns 200
//! ```
//!
//! `--seed benches/seed` runs the seed bridge (the original TypeScript one, see benches/seed/README.md)
//! under `--seed-runtime` instead, with the same agent, turns and checks; scripts/bench-compare runs both.
//!
//! The client runs on one thread, so that it takes at most one of the machine's cores from the bridge and
//! the agents. BENCHMARKS.md has the figures and the commands that produced them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    about = "Load the real bridge with fake_claude agents and report throughput, latency, CPU and memory"
)]
struct Args {
    /// Sessions, each with its own agent process, all running at once.
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// Turns per session after its first one, one after another.
    #[arg(long, default_value_t = 200)]
    turns: usize,
    /// Turns whose deltas are timed (`stamp` replies of 20 deltas each), on one session, after the load.
    #[arg(long, default_value_t = 20)]
    stamped_turns: usize,
    /// The bridge binary. Default: `bridge` beside this program.
    #[arg(long)]
    bridge: Option<PathBuf>,
    /// The agent. Default: `fake_claude` beside this program.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Load the seed bridge in this directory (benches/seed: its `main.ts`) instead of `--bridge`.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// What runs the seed's `main.ts` (bun, which the seed was written for; its `ws` module must be found).
    #[arg(long, default_value = "bun")]
    seed_runtime: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.sessions > 0, "--sessions must be at least 1");
    let beside = |name: &str| -> anyhow::Result<PathBuf> {
        Ok(std::env::current_exe()?.with_file_name(name))
    };
    let bridge_bin = args.bridge.clone().map_or_else(|| beside("bridge"), Ok)?;
    let agent_bin = args
        .agent
        .clone()
        .map_or_else(|| beside("fake_claude"), Ok)?;
    let dir = tempfile::tempdir()?;
    let mut bridge = match &args.seed {
        Some(seed) => BridgeUnderLoad::start_seed(
            seed,
            &args.seed_runtime,
            &agent_bin,
            dir.path(),
            args.sessions,
        )?,
        None => BridgeUnderLoad::start(&bridge_bin, &agent_bin, dir.path(), args.sessions)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args, &bridge));
    bridge.stop();
    let report = report?;
    println!("{report}");
    ensure!(report.errors.is_empty(), "{} errors", report.errors.len());
    Ok(())
}

/// The bridge process and what /proc says about it.
struct BridgeUnderLoad {
    child: Child,
    addr: SocketAddr,
}

impl BridgeUnderLoad {
    fn start(bridge: &Path, agent: &Path, dir: &Path, sessions: usize) -> anyhow::Result<Self> {
        let workspace = dir.join("workspace");
        std::fs::create_dir(&workspace)?;
        let mut command = Command::new(bridge);
        command
            .args(["--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"])
            .arg("--claude-bin")
            .arg(agent)
            .arg("--workspace-root")
            .arg(&workspace)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--max-processes", &(sessions + 8).to_string()])
            .args(["--process-idle", "1h", "--log", "warn,bridge=info"])
            .env("CLAUDE_CONFIG_DIR", dir.join("claude"));
        Self::ready(command)
    }

    /// The seed bridge, `runtime SEED/main.ts`. The seed spawns `claude` from PATH with `--resume` on the
    /// session's conversation id from its session mapping: so `claude` is the agent here, and each session
    /// of the load is mapped to a conversation that exists (an empty transcript), as a session the seed
    /// has served before would be.
    fn start_seed(
        seed: &Path,
        runtime: &Path,
        agent: &Path,
        dir: &Path,
        sessions: usize,
    ) -> anyhow::Result<Self> {
        let workspace = dir.join("workspace");
        let bin = dir.join("bin");
        let projects = dir.join("claude").join("projects");
        let transcripts = projects.join(workspace.to_string_lossy().replace(['/', '.'], "-"));
        for made in [&workspace, &bin, &transcripts] {
            std::fs::create_dir_all(made)?;
        }
        std::os::unix::fs::symlink(std::path::absolute(agent)?, bin.join("claude"))?;
        let mut mapping = serde_json::Map::new();
        for session in 0..sessions {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(transcripts.join(format!("{id}.jsonl")), "")?;
            mapping.insert(
                session_key(session),
                json!({"claudeSessionUuid": id, "workspace": workspace}),
            );
        }
        std::fs::write(dir.join("sessions.json"), Value::from(mapping).to_string())?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))?;
        let mut command = Command::new(runtime);
        command
            .arg(std::path::absolute(seed)?.join("main.ts"))
            .current_dir(&workspace)
            .env("PATH", path)
            .env("SEED_SESSIONS", dir.join("sessions.json"))
            .env("SEED_MAX_PROCESSES", (sessions + 8).to_string())
            .env("CLAUDE_CONFIG_DIR", dir.join("claude"));
        Self::ready(command)
    }

    /// Starts `command` and waits for its `bridge ready: POST http://ADDR/…` line. Settings meant for
    /// another bridge (`SYNTHESIS_*` in our environment) are not passed on.
    fn ready(mut command: Command) -> anyhow::Result<Self> {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SYNTHESIS_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", command.get_program().display()))?;
        // Read up to the ready line, then keep draining (to our standard error) so the bridge never blocks.
        let mut stderr = std::io::BufReader::new(child.stderr.take().context("stderr")?);
        let addr = loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut stderr, &mut line)? == 0 {
                bail!("the bridge exited before it was ready");
            }
            eprint!("{line}");
            if let Some(rest) = line.split("bridge ready: POST http://").nth(1) {
                break rest.split('/').next().context("address")?.parse()?;
            }
        };
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::stderr()));
        Ok(Self { child, addr })
    }

    /// CPU time used by every thread of the bridge so far (scheduler statistics: nanoseconds, not ticks).
    fn cpu(&self) -> anyhow::Result<Duration> {
        let mut total = 0u64;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.child.id()))? {
            let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
            total += stat.split(' ').next().unwrap_or("0").parse::<u64>()?;
        }
        Ok(Duration::from_nanos(total))
    }

    /// `VmRSS` or `VmHWM` from /proc/PID/status, in KiB.
    fn memory(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|line| line.starts_with(field))
            .with_context(|| format!("no {field}"))?;
        let kib = line.split_whitespace().nth(1).unwrap_or_default();
        Ok(kib.parse()?)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Default)]
struct Report {
    sessions: usize,
    turns_per_session: usize,
    /// Turns of the load that were answered correctly.
    turns: usize,
    first_turns: Vec<Duration>,
    latencies: Vec<Duration>,
    elapsed: Duration,
    cpu: Duration,
    rss_before_kib: u64,
    rss_live_kib: u64,
    peak_rss_kib: u64,
    delta_lateness: Vec<Duration>,
    /// How many content deltas carried the stamps (one each, unless the bridge holds deltas back).
    stamp_deltas: usize,
    errors: Vec<String>,
}

async fn run(args: &Args, bridge: &BridgeUnderLoad) -> anyhow::Result<Report> {
    let mut report = Report {
        sessions: args.sessions,
        turns_per_session: args.turns,
        rss_before_kib: bridge.memory("VmRSS")?,
        ..Report::default()
    };

    // Every session's first turn at once: each starts its agent.
    let mut connections = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        connections.push(connect(bridge.addr).await?);
    }
    let firsts = futures::future::join_all(
        connections
            .iter_mut()
            .enumerate()
            .map(|(session, sender)| timed_turn(sender, session, 0)),
    )
    .await;
    for result in firsts {
        match result {
            Ok(took) => report.first_turns.push(took),
            Err(err) => report.errors.push(format!("first turn: {err:#}")),
        }
    }

    // The load: every session's turns one after another, all sessions at once.
    let cpu_before = bridge.cpu()?;
    let started = Instant::now();
    let per_session = futures::future::join_all(connections.iter_mut().enumerate().map(
        |(session, sender)| async move {
            let mut results = Vec::with_capacity(args.turns);
            for turn in 1..=args.turns {
                results.push(timed_turn(sender, session, turn).await);
            }
            results
        },
    ))
    .await;
    report.elapsed = started.elapsed();
    report.cpu = bridge.cpu()? - cpu_before;
    for result in per_session.into_iter().flatten() {
        match result {
            Ok(took) => report.latencies.push(took),
            Err(err) => report.errors.push(format!("turn: {err:#}")),
        }
    }
    report.turns = report.latencies.len();
    report.rss_live_kib = bridge.memory("VmRSS")?;
    report.peak_rss_kib = bridge.memory("VmHWM")?;

    // How late deltas arrive, on a quiet bridge.
    if let Some(sender) = connections.first_mut() {
        for _ in 0..args.stamped_turns {
            match stamped_turn(sender).await {
                Ok((lateness, deltas)) => {
                    report.delta_lateness.extend(lateness);
                    report.stamp_deltas += deltas;
                }
                Err(err) => report.errors.push(format!("stamped turn: {err:#}")),
            }
        }
    }
    Ok(report)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One streamed turn of session `session`, checked; returns how long it took.
async fn timed_turn(
    sender: &mut SendRequest<Full<Bytes>>,
    session: usize,
    turn: usize,
) -> anyhow::Result<Duration> {
    let text = format!("load s{session} t{turn}");
    let started = Instant::now();
    let answer = streamed_turn(sender, session, &text, |_| {}).await?;
    let took = started.elapsed();
    ensure!(
        answer == format!("echo: {text}"),
        "wrong answer {answer:?} to {text:?}"
    );
    Ok(took)
}

/// A `stamp 20` turn: how long after its sending each stamp was read, and in how many deltas they came (a
/// bridge that holds deltas back sends several stamps in one).
async fn stamped_turn(
    sender: &mut SendRequest<Full<Bytes>>,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let (mut lateness, mut deltas) = (Vec::new(), 0);
    let answer = streamed_turn(sender, 0, "stamp 20", |delta| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let before = lateness.len();
        for stamp in delta.split_whitespace() {
            if let Ok(sent) = stamp.parse::<u64>() {
                lateness.push(now.saturating_sub(Duration::from_micros(sent)));
            }
        }
        deltas += usize::from(lateness.len() > before);
    })
    .await?;
    ensure!(
        lateness.len() == 20,
        "{} stamped deltas in {answer:?}",
        lateness.len()
    );
    Ok((lateness, deltas))
}

/// Sends `text` as session `session`'s streamed turn and reads the answer to `data: [DONE]`, calling
/// `on_delta` with each piece of content as it is read. Returns the whole answer; an error if the stream is
/// not a complete, successful one.
async fn streamed_turn(
    sender: &mut SendRequest<Full<Bytes>>,
    session: usize,
    text: &str,
    mut on_delta: impl FnMut(&str),
) -> anyhow::Result<String> {
    let body = json!({"model": "claude", "stream": true, "user": session_key(session),
        "messages": [{"role": "user", "content": text}]});
    let request = Request::post("/v1/chat/completions")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    ensure!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let mut body = response.into_body();
    let (mut pending, mut answer, mut finish, mut done) = (Vec::new(), String::new(), None, false);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let Some(payload) = event.strip_prefix(b"data: ") else {
                continue;
            };
            let payload = &payload[..payload.len() - 2];
            if payload == b"[DONE]" {
                done = true;
                continue;
            }
            let chunk: Value = serde_json::from_slice(payload)?;
            ensure!(chunk.get("error").is_none(), "error chunk: {chunk}");
            let choice = &chunk["choices"][0];
            if let Some(content) = choice["delta"]["content"].as_str() {
                on_delta(content);
                answer.push_str(content);
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                finish = Some(reason.to_owned());
            }
        }
    }
    ensure!(done, "no [DONE]");
    ensure!(
        finish.as_deref() == Some("stop"),
        "finish_reason {finish:?}"
    );
    Ok(answer)
}

/// The session key of session `session`: the request's `user`.
fn session_key(session: usize) -> String {
    format!("load-{session}")
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut latencies = self.latencies.clone();
        latencies.sort();
        let mut firsts = self.first_turns.clone();
        firsts.sort();
        let mut late = self.delta_lateness.clone();
        late.sort();
        let turns = self.turns.max(1) as f64;
        writeln!(
            f,
            "sessions {} x turns {}",
            self.sessions, self.turns_per_session
        )?;
        writeln!(
            f,
            "throughput      {:.0} turns/s ({} turns in {:.2} s)",
            self.turns as f64 / self.elapsed.as_secs_f64(),
            self.turns,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "turn latency    p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            ms(percentile(&latencies, 50)),
            ms(percentile(&latencies, 99)),
            ms(latencies.last().copied().unwrap_or_default())
        )?;
        writeln!(
            f,
            "first turn      p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms (agent start included)",
            ms(percentile(&firsts, 50)),
            ms(percentile(&firsts, 99)),
            ms(firsts.last().copied().unwrap_or_default())
        )?;
        writeln!(
            f,
            "bridge CPU      {:.1} us/turn ({:.3} s in all)",
            self.cpu.as_secs_f64() * 1e6 / turns,
            self.cpu.as_secs_f64()
        )?;
        writeln!(
            f,
            "bridge memory   {:.1} MB with {} live sessions, peak {:.1} MB, {:.1} KB per session",
            self.rss_live_kib as f64 / 1024.0,
            self.sessions,
            self.peak_rss_kib as f64 / 1024.0,
            self.rss_live_kib.saturating_sub(self.rss_before_kib) as f64 / self.sessions as f64
        )?;
        writeln!(
            f,
            "delta lateness  p50 {:.3} ms  p99 {:.3} ms ({} stamps in {} deltas)",
            ms(percentile(&late, 50)),
            ms(percentile(&late, 99)),
            late.len(),
            self.stamp_deltas
        )?;
        write!(f, "errors          {}", self.errors.len())?;
        for error in self.errors.iter().take(5) {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}
