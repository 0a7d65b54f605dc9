//! The OpenAI chat-completions wire format: what requests carry and how answers are written.
//!
//! - [`request`]: the request body, parsed without copying the (large) history;
//! - [`extract`]: the user's text, session key and workspace, from the body and headers;
//! - [`chunk`]: `chat.completion.chunk` events and the `chat.completion` object;
//! - [`error`]: `{"error": {…}}` bodies and their HTTP status.

pub mod chunk;
pub mod error;
pub mod extract;
pub mod request;

pub use chunk::ChunkEncoder;
pub use error::ApiError;
pub use extract::{ExtractError, ExtractedTurn, KeySource};
pub use request::ChatRequest;
