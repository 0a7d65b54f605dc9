//! Reading Claude Code's terminal for an error message: what a process said before it died or stopped,
//! without the drawing around it (box lines, spinners, the status line, key hints).

use synthesis_bridge::spawner::ProcessExit;

/// What `claude --resume U` says, in either mode, when it has no conversation `U` to resume.
pub(crate) const NO_CONVERSATION: &str = "No conversation found with session ID";

/// `text` without white space: a terminal program may draw a space as a cursor move, or wrap anywhere.
pub(crate) fn flat(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Phrases of the TUI's frame rather than of a message: a line holding one says nothing about a cause.
const CHROME: &[&str] = &[
    "esc to interrupt",
    "for shortcuts",
    "/effort",
    "ctrl+",
    "shift+tab",
    "Enter to confirm",
    "Esc to cancel",
    "bypass permissions",
    "accept edits",
];

/// How a process ended, for "claude … in the middle of the turn": `exited with code 1 (its last words:
/// "…")` with the last meaningful line of its `screen`, or `was killed by signal 9 (SIGKILL)`. A process
/// killed by a signal wrote nothing about it (`docs/claude-cli-measurements.md`, L7): its screen is just
/// the last frame the TUI drew, so it is not quoted.
pub(crate) fn exit_reason(exit: ProcessExit, screen: &str) -> String {
    exit.reason(meaningful_lines(screen, 1).pop().as_deref())
}

/// The last `count` non-blank lines of a screen with the drawing removed, joined with ` | `, at most 1,000
/// characters.
pub(crate) fn last_lines(screen: &str, count: usize) -> String {
    let tail = meaningful_lines(screen, count).join(" | ");
    let skip = tail.chars().count().saturating_sub(1000);
    tail.chars().skip(skip).collect()
}

/// The last `count` lines that say something, oldest first, each cleaned of drawing characters.
fn meaningful_lines(screen: &str, count: usize) -> Vec<String> {
    let mut lines: Vec<String> = screen
        .lines()
        .rev()
        .filter(|line| !CHROME.iter().any(|phrase| line.contains(phrase)))
        .map(clean)
        .filter(|line| line.chars().filter(|c| c.is_alphanumeric()).count() >= 3)
        .take(count)
        .collect();
    lines.reverse();
    lines
}

/// A line without box drawing, block elements, spinners and runs of white space.
fn clean(line: &str) -> String {
    let drawn = |c: char| {
        matches!(c, '\u{2500}'..='\u{259F}' | '\u{25A0}'..='\u{25FF}' | '\u{2700}'..='\u{27BF}')
            || matches!(c, '❯' | '⏺' | '⎿' | '·' | '…' | '↓' | '↑')
    };
    line.split(|c: char| c.is_whitespace() || drawn(c))
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_1: ProcessExit = ProcessExit {
        code: Some(1),
        signal: None,
    };

    #[test]
    fn the_drawing_around_a_message_is_left_out() {
        let screen = "\n error: No conversation found with session ID: 5d1c\n╭──────────╮\n│ ❯        │\n╰──────────╯\n ◐ medium · /effort───\n  ? for shortcuts\n";
        assert_eq!(
            exit_reason(EXIT_1, screen),
            "exited with code 1 (its last words: \"error: No conversation found with session ID: 5d1c\")"
        );
        assert_eq!(exit_reason(EXIT_1, "───\n ✻ \n"), "exited with code 1");
    }

    #[test]
    fn a_killed_process_is_named_by_its_signal_and_its_screen_is_not_quoted() {
        let killed = ProcessExit {
            code: None,
            signal: Some(9),
        };
        let screen = "← synthesis: STALL mid\n(running UserPromptSubmit hook 0s)\n";
        assert_eq!(
            exit_reason(killed, screen),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn the_last_lines_of_a_dialog_are_quoted_clean() {
        let screen = "  Detected a custom API key in your environment\n\n  Do you want to use this API key?\n  ❯ No (recommended)\n\n  Enter to confirm · Esc to cancel\n";
        assert_eq!(
            last_lines(screen, 2),
            "Do you want to use this API key? | No (recommended)"
        );
    }
}
