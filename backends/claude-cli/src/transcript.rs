//! Claude Code's transcripts: whether a conversation exists, and which message a prompt was.

use std::path::Path;

use uuid::Uuid;

/// Whether Claude Code has a transcript of conversation `id` under `config_dir` (it keeps one per project
/// directory: `projects/<mangled cwd>/<id>.jsonl`, and `--resume` finds it from any directory).
pub(crate) fn exists(config_dir: Option<&Path>, id: Uuid) -> bool {
    let Some(projects) = config_dir.map(|dir| dir.join("projects")) else {
        return false;
    };
    let Ok(projects) = std::fs::read_dir(projects) else {
        return false;
    };
    let file = format!("{id}.jsonl");
    projects
        .filter_map(Result::ok)
        .any(|project| project.path().join(&file).is_file())
}

/// The `message_id` of the channel message that became prompt `prompt_id`, from a transcript's JSON lines.
///
/// The prompt's `user` record carries `promptId` and the message as Claude saw it:
/// `<channel source="…" chat_id="…" message_id="…">…</channel>`. After an interrupted prompt, the next
/// record holds the interrupted message too, so the last tag is the prompt's own.
pub(crate) fn message_id_of_prompt(transcript: &str, prompt_id: &str) -> Option<String> {
    transcript
        .lines()
        .rev()
        .filter(|line| line.contains(prompt_id) && line.contains("<channel"))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["type"] == "user" && record["promptId"] == prompt_id)
        .filter_map(|record| record_text(&record["message"]["content"]))
        .find_map(|text| last_message_id(&text))
}

fn record_text(content: &serde_json::Value) -> Option<String> {
    match content {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter_map(|block| block["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

fn last_message_id(text: &str) -> Option<String> {
    let tag_start = text.rfind("<channel")?;
    let tag = &text[tag_start
        ..text[tag_start..]
            .find('>')
            .map_or(text.len(), |end| tag_start + end)];
    let value_start = tag.find(" message_id=\"")? + " message_id=\"".len();
    let value = &tag[value_start..];
    Some(value[..value.find('"')?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as Claude Code 2.1.329 writes them (trimmed).
    const TRANSCRIPT: &str = concat!(
        r#"{"type":"queue-operation","operation":"enqueue","content":"<channel source=\"synthesis\" chat_id=\"a\" message_id=\"m-0\">\nhi\n</channel>"}"#,
        "\n",
        r#"{"promptId":"p-1","type":"user","message":{"role":"user","content":"<channel source=\"synthesis\" chat_id=\"a::b\" message_id=\"m-1\">\nhello one\n</channel>"},"origin":{"kind":"channel","server":"synthesis"}}"#,
        "\n",
        r#"{"promptId":"p-1","type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"sent"}]}}"#,
        "\n",
        r#"{"promptId":"p-2","type":"user","message":{"role":"user","content":[{"type":"text","text":"<channel source=\"synthesis\" chat_id=\"a::b\" message_id=\"m-2\">\nSLOW\n</channel>"},{"type":"text","text":"[Request interrupted by user]\n"},{"type":"text","text":"<channel source=\"synthesis\" chat_id=\"a::b\" message_id=\"m-3\">\nnext\n</channel>"}]}}"#,
        "\n",
    );

    #[test]
    fn a_prompt_is_traced_to_its_channel_message() {
        assert_eq!(
            message_id_of_prompt(TRANSCRIPT, "p-1").as_deref(),
            Some("m-1")
        );
        // After an interrupt, the prompt is the last message in the record.
        assert_eq!(
            message_id_of_prompt(TRANSCRIPT, "p-2").as_deref(),
            Some("m-3")
        );
        assert_eq!(message_id_of_prompt(TRANSCRIPT, "p-9"), None);
    }

    #[test]
    fn a_transcript_is_found_in_any_project_directory() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        assert!(!exists(Some(dir.path()), id));
        let project = dir.path().join("projects").join("-work-repo");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(project.join(format!("{id}.jsonl")), "{}\n").unwrap();
        assert!(exists(Some(dir.path()), id));
        assert!(!exists(Some(dir.path()), Uuid::new_v4()));
        assert!(!exists(None, id));
    }
}
