//! The records of `claude -p --output-format stream-json --verbose --include-partial-messages`, one JSON
//! object per line, reduced to what a turn acts on (`docs/claude-cli-measurements.md`, section N).

use serde_json::Value;
use synthesis_bridge::Usage;

/// One line of Claude Code's output, as far as a turn cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// A text block of the answer begins.
    TextStart,
    /// More text of the answer, as the model wrote it.
    TextDelta(String),
    /// Claude Code asks whether a tool may run (`--permission-prompt-tool stdio`), and waits for the answer.
    ToolPermission {
        request_id: String,
        tool_name: String,
    },
    /// A message of Claude Code's MCP client to one of the bridge's in-process (`sdk`) MCP servers: the
    /// client's tools ([`super::sdk_server`]).
    Mcp {
        request_id: String,
        server: String,
        message: Value,
    },
    /// The main agent calls the client's tools: the whole `tool_use` blocks of its message, as
    /// `(id, name, input)`.
    ClientToolUses(Vec<(String, String, Value)>),
    /// The main agent's model message is complete.
    MessageStop,
    /// Another request Claude Code waits on an answer to.
    ControlRequest { request_id: String, subtype: String },
    /// Claude Code's answer to one of the bridge's requests (an interrupt).
    ControlResponse {
        request_id: String,
        error: Option<String>,
    },
    /// The prompt is over.
    Result(PromptResult),
    /// Anything else: the `init` and status records, whole messages, tool results, a subagent's stream.
    Other,
}

/// How a prompt ended (its `result` record).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct PromptResult {
    /// `success`, `error_during_execution`, `error_max_turns`, …
    pub(crate) subtype: String,
    pub(crate) is_error: bool,
    /// The text of the last answer, or a failure's message.
    pub(crate) text: Option<String>,
    /// Further messages of a failure.
    pub(crate) errors: Vec<String>,
    /// How many model requests the prompt made; 0 when it never reached the model.
    pub(crate) num_turns: u64,
    pub(crate) usage: Option<Usage>,
}

impl PromptResult {
    /// What went wrong, in Claude Code's words.
    pub(crate) fn failure(&self) -> String {
        let mut parts: Vec<&str> = self.text.iter().map(String::as_str).collect();
        parts.extend(self.errors.iter().map(String::as_str));
        let said = parts
            .into_iter()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if said.is_empty() {
            self.subtype.clone()
        } else {
            said
        }
    }
}

impl Record {
    /// Reads one line of output; `None` for a line that is not a JSON object.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(line).ok()?;
        let str_of = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        Some(match value["type"].as_str()? {
            // A subagent's stream (`parent_tool_use_id` set) is its own business, not the answer.
            "stream_event" if value["parent_tool_use_id"].is_null() => {
                let event = &value["event"];
                match event["type"].as_str() {
                    Some("content_block_start") if event["content_block"]["type"] == "text" => {
                        Self::TextStart
                    }
                    Some("content_block_delta") if event["delta"]["type"] == "text_delta" => {
                        Self::TextDelta(str_of(&event["delta"]["text"]))
                    }
                    Some("message_stop") => Self::MessageStop,
                    _ => Self::Other,
                }
            }
            // Claude Code writes each block of the model's message as an `assistant` record once it is
            // complete, before the message's `message_stop`.
            "assistant" if value["parent_tool_use_id"].is_null() => {
                let uses: Vec<(String, String, Value)> = value["message"]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|block| block["type"] == "tool_use")
                    .filter_map(|block| {
                        let name = block["name"].as_str()?;
                        let name = name.strip_prefix(super::sdk_server::PREFIX)?;
                        Some((
                            str_of(&block["id"]),
                            name.to_owned(),
                            block["input"].clone(),
                        ))
                    })
                    .collect();
                if uses.is_empty() {
                    Self::Other
                } else {
                    Self::ClientToolUses(uses)
                }
            }
            "control_request" => {
                let request = &value["request"];
                let request_id = str_of(&value["request_id"]);
                match request["subtype"].as_str() {
                    Some("can_use_tool") => Self::ToolPermission {
                        request_id,
                        tool_name: str_of(&request["tool_name"]),
                    },
                    Some("mcp_message") => Self::Mcp {
                        request_id,
                        server: str_of(&request["server_name"]),
                        message: request["message"].clone(),
                    },
                    subtype => Self::ControlRequest {
                        request_id,
                        subtype: subtype.unwrap_or_default().to_owned(),
                    },
                }
            }
            "control_response" => {
                let response = &value["response"];
                Self::ControlResponse {
                    request_id: str_of(&response["request_id"]),
                    error: (response["subtype"] == "error").then(|| str_of(&response["error"])),
                }
            }
            "result" => Self::Result(PromptResult {
                subtype: str_of(&value["subtype"]),
                is_error: value["is_error"].as_bool().unwrap_or(false),
                text: value["result"].as_str().map(str::to_owned),
                errors: value["errors"]
                    .as_array()
                    .map(|errors| {
                        errors
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                num_turns: value["num_turns"].as_u64().unwrap_or_default(),
                usage: usage(&value),
            }),
            _ => Self::Other,
        })
    }
}

/// The prompt's token counts. `model_usage_since_last_result` covers every model request of this prompt
/// (per model); `usage` only the last request, so it is the fallback.
fn usage(result: &Value) -> Option<Usage> {
    let count = |value: &Value, key: &str| value[key].as_u64().unwrap_or_default();
    if let Some(models) = result["model_usage_since_last_result"].as_object() {
        let (mut prompt, mut completion) = (0, 0);
        for model in models.values() {
            prompt += count(model, "inputTokens")
                + count(model, "cacheReadInputTokens")
                + count(model, "cacheCreationInputTokens");
            completion += count(model, "outputTokens");
        }
        return Some(Usage::new(prompt, completion));
    }
    let usage = result.get("usage")?;
    Some(Usage::new(
        count(usage, "input_tokens")
            + count(usage, "cache_read_input_tokens")
            + count(usage, "cache_creation_input_tokens"),
        count(usage, "output_tokens"),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Lines as Claude Code 2.1.329 wrote them (section N1, N3 and N4), shortened.
    #[test]
    fn the_records_of_a_turn_are_read() {
        let delta = r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}},"session_id":"48ea4277","parent_tool_use_id":null,"uuid":"b82da647"}"#;
        assert_eq!(Record::parse(delta), Some(Record::TextDelta("ok".into())));
        let start = r#"{"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}},"parent_tool_use_id":null}"#;
        assert_eq!(Record::parse(start), Some(Record::TextStart));
        let subagent = delta.replace(
            r#""parent_tool_use_id":null"#,
            r#""parent_tool_use_id":"toolu_1""#,
        );
        assert_eq!(Record::parse(&subagent), Some(Record::Other));
        let init = r#"{"type":"system","subtype":"init","session_id":"48ea4277"}"#;
        assert_eq!(Record::parse(init), Some(Record::Other));
        assert_eq!(Record::parse("not json"), None);
    }

    #[test]
    fn a_permission_request_and_an_interrupts_answer_are_read() {
        let ask = r#"{"type":"control_request","request_id":"9b83","request":{"subtype":"can_use_tool","tool_name":"Bash","display_name":"Bash","input":{"command":"touch a1.txt"},"tool_use_id":"toolu_mock1"}}"#;
        assert_eq!(
            Record::parse(ask),
            Some(Record::ToolPermission {
                request_id: "9b83".into(),
                tool_name: "Bash".into(),
            })
        );
        let answer = r#"{"type":"control_response","response":{"subtype":"success","request_id":"int-1","response":{"still_queued":[]}}}"#;
        assert_eq!(
            Record::parse(answer),
            Some(Record::ControlResponse {
                request_id: "int-1".into(),
                error: None
            })
        );
    }

    #[test]
    fn a_result_gives_the_prompts_usage_over_all_its_requests() {
        let line = json!({
            "type": "result", "subtype": "success", "is_error": false, "num_turns": 2, "result": "ok",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 5},
            "model_usage_since_last_result": {
                "claude-opus-5-5": {"inputTokens": 20, "outputTokens": 9, "cacheReadInputTokens": 3, "cacheCreationInputTokens": 1},
                "claude-haiku-5": {"inputTokens": 4, "outputTokens": 1, "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0}
            }
        });
        let Some(Record::Result(result)) = Record::parse(&line.to_string()) else {
            panic!("a result");
        };
        assert_eq!(result.usage, Some(Usage::new(28, 10)));
        assert_eq!(result.text.as_deref(), Some("ok"));
        assert!(!result.is_error);

        let mut last_request_only = line.clone();
        last_request_only
            .as_object_mut()
            .unwrap()
            .remove("model_usage_since_last_result");
        let Some(Record::Result(result)) = Record::parse(&last_request_only.to_string()) else {
            panic!("a result");
        };
        assert_eq!(result.usage, Some(Usage::new(10, 5)));
    }

    #[test]
    fn a_failed_result_says_what_went_wrong() {
        let line = r#"{"type":"result","subtype":"error_during_execution","duration_ms":0,"is_error":true,"num_turns":0,"errors":["[ede_diagnostic] result_type=user"]}"#;
        let Some(Record::Result(result)) = Record::parse(line) else {
            panic!("a result");
        };
        assert!(result.is_error);
        assert_eq!(result.num_turns, 0);
        assert_eq!(result.failure(), "[ede_diagnostic] result_type=user");
        let bare = PromptResult {
            subtype: "error_max_turns".into(),
            ..PromptResult::default()
        };
        assert_eq!(bare.failure(), "error_max_turns");
    }
}
