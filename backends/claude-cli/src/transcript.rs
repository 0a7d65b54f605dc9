//! Claude Code's transcripts: whether a conversation can be resumed, started, or neither.

use std::io::BufRead;
use std::path::Path;

use uuid::Uuid;

/// What Claude Code has of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transcript {
    /// Nothing: `--session-id` starts it.
    Missing,
    /// A file without a conversation: Claude Code creates it with metadata records and writes the
    /// conversation 0.1 to 0.2 s later, so a process killed in between leaves one. `--resume` refuses it
    /// ("No conversation found") and `--session-id` too ("already in use"): the id is spent.
    Empty,
    /// A conversation `--resume` continues.
    Conversation,
}

/// What Claude Code has of conversation `id` under `config_dir`. It keeps one transcript per project
/// directory (`projects/<mangled cwd>/<id>.jsonl`), and `--resume` finds it from any directory.
pub(crate) fn state(config_dir: Option<&Path>, id: Uuid) -> Transcript {
    let Some(projects) = config_dir.map(|dir| dir.join("projects")) else {
        return Transcript::Missing;
    };
    let Ok(projects) = std::fs::read_dir(projects) else {
        return Transcript::Missing;
    };
    let file = format!("{id}.jsonl");
    let mut found = Transcript::Missing;
    for transcript in projects
        .filter_map(Result::ok)
        .map(|project| project.path().join(&file))
        .filter(|transcript| transcript.is_file())
    {
        if holds_conversation(&transcript) {
            return Transcript::Conversation;
        }
        found = Transcript::Empty;
    }
    found
}

/// A message a conversation may hold.
#[derive(Debug, Clone)]
pub(crate) enum Held {
    /// A channel message, by its id (a `user` record with its tag).
    Message(String),
    /// A stream-json prompt: a `user` record whose content is this text.
    Prompt(String),
}

impl Held {
    /// Whether conversation `id` holds it. Claude Code writes a prompt down 0.05 to 0.5 s after it took it:
    /// a process killed in between leaves the conversation without it, though it was delivered.
    pub(crate) fn in_conversation(&self, config_dir: Option<&Path>, id: Uuid) -> bool {
        let Some(projects) = config_dir.map(|dir| dir.join("projects")) else {
            return false;
        };
        let Ok(projects) = std::fs::read_dir(projects) else {
            return false;
        };
        let file = format!("{id}.jsonl");
        let tag = match self {
            Self::Message(message_id) => format!("message_id=\\\"{message_id}\\\""),
            Self::Prompt(_) => String::new(),
        };
        let held = |line: &str| match self {
            Self::Message(_) => line.contains(&tag),
            Self::Prompt(text) => serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|record| record["message"]["content"] == text.as_str()),
        };
        projects
            .filter_map(Result::ok)
            .filter_map(|project| std::fs::File::open(project.path().join(&file)).ok())
            .any(|transcript| {
                std::io::BufReader::new(transcript)
                    .lines()
                    .map_while(Result::ok)
                    .any(|line| line.contains("\"type\":\"user\"") && held(&line))
            })
    }
}

/// Whether the transcript at `path` has a `user` record. Read line by line: the first one comes early,
/// and a long conversation's transcript is megabytes.
fn holds_conversation(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.contains("\"user\""))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .any(|record| record["type"] == "user")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first records of a transcript as Claude Code 2.1.329 writes them (trimmed).
    const METADATA: &str = concat!(
        r#"{"type":"queue-operation","operation":"enqueue","content":"<channel source=\"synthesis\">hi</channel>"}"#,
        "\n",
        r#"{"type":"summary","summary":"new conversation"}"#,
        "\n",
    );
    const USER: &str = r#"{"promptId":"p-1","type":"user","message":{"role":"user","content":"<channel source=\"synthesis\" chat_id=\"a\" message_id=\"m-1\">\nhi\n</channel>"}}"#;

    #[test]
    fn only_a_transcript_with_a_user_record_in_any_project_directory_holds_a_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        assert_eq!(state(Some(dir.path()), id), Transcript::Missing);
        let project = dir.path().join("projects").join("-work-repo");
        std::fs::create_dir_all(&project).unwrap();
        let transcript = project.join(format!("{id}.jsonl"));
        std::fs::write(&transcript, METADATA).unwrap();
        // Killed before the conversation was written.
        assert_eq!(state(Some(dir.path()), id), Transcript::Empty);
        std::fs::write(&transcript, format!("{METADATA}{USER}\n")).unwrap();
        assert_eq!(state(Some(dir.path()), id), Transcript::Conversation);
        assert_eq!(state(Some(dir.path()), Uuid::new_v4()), Transcript::Missing);
        assert_eq!(state(None, id), Transcript::Missing);
        let message = |id: &str| Held::Message(id.to_owned());
        assert!(message("m-1").in_conversation(Some(dir.path()), id));
        assert!(!message("m-2").in_conversation(Some(dir.path()), id));
        assert!(!message("m-1").in_conversation(Some(dir.path()), Uuid::new_v4()));
    }

    #[test]
    fn a_stream_json_prompt_is_found_by_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let project = dir.path().join("projects").join("-w");
        std::fs::create_dir_all(&project).unwrap();
        let record =
            r#"{"type":"user","message":{"role":"user","content":"run the \"tests\""},"uuid":"u"}"#;
        std::fs::write(
            project.join(format!("{id}.jsonl")),
            format!("{METADATA}{record}\n"),
        )
        .unwrap();
        let prompt = |text: &str| Held::Prompt(text.to_owned());
        assert!(prompt("run the \"tests\"").in_conversation(Some(dir.path()), id));
        assert!(!prompt("run the").in_conversation(Some(dir.path()), id));
    }
}
