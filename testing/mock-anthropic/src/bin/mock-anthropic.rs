//! `mock-anthropic`: the scripted Messages API as a process, for trying the real CLI by hand and for
//! scripts. Prints `ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`, then one line per request it answers: when
//! it arrived (RFC 3339, microseconds), its path, the newest prompt, the answer, and the end of its system
//! prompt (where Claude Code puts `--append-system-prompt`).

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let api = synthesis_mock_anthropic::MockAnthropic::start().await?;
    println!("ANTHROPIC_BASE_URL={}", api.base_url());
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let requests = api.requests();
        for request in &requests[seen..] {
            let asked = request.prompt().map(|prompt| prompt.content);
            let at = humantime::format_rfc3339_micros(request.received_at);
            let system: Option<String> = request.system_tail().map(|tail| {
                let tail = tail.trim_end();
                let start = tail.char_indices().rev().nth(119).map_or(0, |(at, _)| at);
                tail[start..].to_owned()
            });
            println!(
                "{at} {} {:?} -> {:?} system={:?}",
                request.path, asked, request.answer, system
            );
        }
        seen = requests.len();
    }
}
