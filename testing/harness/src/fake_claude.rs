//! Reading what `examples/fake_claude.rs` answers, and whether its processes live.

/// `turn N of conversation U`, `fake_claude`'s answer to `history` → (N, U).
pub fn history(answer: &str) -> (u32, String) {
    let rest = answer.strip_prefix("turn ").expect(answer);
    let (n, id) = rest.split_once(" of conversation ").expect(answer);
    (n.parse().unwrap(), id.to_owned())
}

/// Whether `pid` names a live process (not a zombie).
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(") ").map(|(_, r)| r.as_bytes()[0]),
            Some(b'Z' | b'X')
        )
    })
}
