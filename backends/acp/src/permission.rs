//! [`PermissionPolicy`]: how the agent's `session/request_permission` requests are answered. Nobody sits
//! at a chat front end to click "Allow", so the bridge answers at once, by the policy the operator set.

use agent_client_protocol_schema::v1::{
    PermissionOption, PermissionOptionKind, RequestPermissionOutcome, RequestPermissionRequest,
    RequestPermissionResponse, SelectedPermissionOutcome, ToolKind,
};
use serde_json::Value;

/// What the agent may do when it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Allow {
    /// Nothing it asks about. The default: the agent still runs what its own settings allow without
    /// asking.
    #[default]
    Nothing,
    /// File edits (ACP tool kind `edit`), nothing else.
    Edits,
    /// Everything.
    Everything,
}

/// How permission requests are answered: by [`Allow`], and for the tools named in `allowed_tools`,
/// always yes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PermissionPolicy {
    /// What is allowed in general.
    pub allow: Allow,
    /// Tools allowed by name: the agent's own name for the tool, where it gives one in the call's `_meta`
    /// (`Bash`, `Edit` for Claude), or ACP's kind of the call (`execute`, `edit`, `read`, `fetch`, …).
    pub allowed_tools: Vec<String>,
}

impl PermissionPolicy {
    /// A policy that allows `allow`.
    pub fn new(allow: Allow) -> Self {
        Self {
            allow,
            allowed_tools: Vec::new(),
        }
    }

    /// Allows `tool` too.
    pub fn allow_tool(mut self, tool: impl Into<String>) -> Self {
        self.allowed_tools.push(tool.into());
        self
    }

    /// The answer to `request`, whose tool the agent calls `names` (besides what the request's `_meta`
    /// says): one of its options, the first that allows once (or always) when the policy allows the call,
    /// else the first that rejects once (or always); with no such option, the request is cancelled.
    pub(crate) fn answer(
        &self,
        request: &RequestPermissionRequest,
        names: &[String],
    ) -> (bool, RequestPermissionResponse) {
        let allowed = self.allows(request, names);
        let wanted: &[PermissionOptionKind] = if allowed {
            &[
                PermissionOptionKind::AllowOnce,
                PermissionOptionKind::AllowAlways,
            ]
        } else {
            &[
                PermissionOptionKind::RejectOnce,
                PermissionOptionKind::RejectAlways,
            ]
        };
        let chosen = wanted.iter().find_map(|kind| {
            request
                .options
                .iter()
                .find(|option: &&PermissionOption| option.kind == *kind)
        });
        let outcome = match chosen {
            Some(option) => RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(
                option.option_id.clone(),
            )),
            None => RequestPermissionOutcome::Cancelled,
        };
        (allowed, RequestPermissionResponse::new(outcome))
    }

    fn allows(&self, request: &RequestPermissionRequest, names: &[String]) -> bool {
        let kind = request.tool_call.fields.kind;
        match self.allow {
            Allow::Everything => return true,
            Allow::Edits if kind == Some(ToolKind::Edit) => return true,
            _ => {}
        }
        let kind_name = kind.and_then(|kind| match serde_json::to_value(kind) {
            Ok(Value::String(name)) => Some(name),
            _ => None,
        });
        let in_request = tool_names(request.tool_call.meta.as_ref());
        self.allowed_tools.iter().any(|allowed| {
            kind_name.as_deref() == Some(allowed.as_str())
                || in_request.iter().any(|name| name == allowed)
                || names.iter().any(|name| name == allowed)
        })
    }

    /// Says what the policy is, for the log.
    pub(crate) fn describe(&self) -> String {
        let allow = match self.allow {
            Allow::Nothing => "nothing",
            Allow::Edits => "edits",
            Allow::Everything => "everything",
        };
        if self.allowed_tools.is_empty() {
            format!("allows {allow}")
        } else {
            format!("allows {allow} and {}", self.allowed_tools.join(", "))
        }
    }
}

/// The agent's own names for a tool in a call's `_meta`: `{"claudeCode": {"toolName": "Bash"}}`. The
/// Claude agent gives them in the `tool_call` update that announces the call, not in the permission
/// request that follows it.
pub(crate) fn tool_names(meta: Option<&serde_json::Map<String, Value>>) -> Vec<String> {
    meta.into_iter()
        .flat_map(|meta| meta.values())
        .filter_map(|agent| agent["toolName"].as_str())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A request as `@zed-industries/claude-agent-acp` 0.23.1 sends it for a `Bash` call.
    fn bash_request() -> RequestPermissionRequest {
        serde_json::from_value(json!({
            "options": [
                {"kind": "allow_always", "name": "Always Allow", "optionId": "allow_always"},
                {"kind": "allow_once", "name": "Allow", "optionId": "allow"},
                {"kind": "reject_once", "name": "Reject", "optionId": "reject"}
            ],
            "sessionId": "s-1",
            "toolCall": {
                "_meta": {"claudeCode": {"toolName": "Bash"}},
                "toolCallId": "toolu_1",
                "rawInput": {"command": "touch x.txt"},
                "title": "touch x.txt",
                "kind": "execute"
            }
        }))
        .unwrap()
    }

    fn chosen(policy: &PermissionPolicy, request: &RequestPermissionRequest) -> Value {
        serde_json::to_value(policy.answer(request, &[]).1).unwrap()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let answer = chosen(&PermissionPolicy::default(), &bash_request());
        assert_eq!(
            answer,
            json!({"outcome": {"outcome": "selected", "optionId": "reject"}})
        );
    }

    #[test]
    fn a_tool_is_allowed_by_the_agents_name_or_by_its_kind() {
        let by_name = PermissionPolicy::default().allow_tool("Bash");
        assert_eq!(
            chosen(&by_name, &bash_request())["outcome"]["optionId"],
            "allow"
        );
        let by_kind = PermissionPolicy::default().allow_tool("execute");
        assert_eq!(
            chosen(&by_kind, &bash_request())["outcome"]["optionId"],
            "allow"
        );
        let other = PermissionPolicy::default().allow_tool("Edit");
        assert_eq!(
            chosen(&other, &bash_request())["outcome"]["optionId"],
            "reject"
        );
        // Named in the call's announcement rather than in the request.
        let mut unnamed = bash_request();
        unnamed.tool_call.meta = None;
        assert_eq!(chosen(&by_name, &unnamed)["outcome"]["optionId"], "reject");
        let (allowed, _) = by_name.answer(&unnamed, &["Bash".to_owned()]);
        assert!(allowed);
    }

    #[test]
    fn edits_allow_only_edits() {
        let edits = PermissionPolicy::new(Allow::Edits);
        assert_eq!(
            chosen(&edits, &bash_request())["outcome"]["optionId"],
            "reject"
        );
        let mut edit = bash_request();
        edit.tool_call.fields.kind = Some(ToolKind::Edit);
        assert_eq!(chosen(&edits, &edit)["outcome"]["optionId"], "allow");
        let everything = PermissionPolicy::new(Allow::Everything);
        assert_eq!(
            chosen(&everything, &bash_request())["outcome"]["optionId"],
            "allow"
        );
    }

    #[test]
    fn without_a_fitting_option_the_request_is_cancelled() {
        let mut request = bash_request();
        request
            .options
            .retain(|option| option.kind != PermissionOptionKind::RejectOnce);
        assert_eq!(
            chosen(&PermissionPolicy::default(), &request),
            json!({"outcome": {"outcome": "cancelled"}})
        );
    }
}
