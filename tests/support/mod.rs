//! Shared test fixtures: those of `synthesis-test-harness` (a bridge served on 127.0.0.1:0, a backend the
//! test scripts, a plain client), and the root package's own: the `bridge` binary, OpenClaw, the real CLI.
#![allow(dead_code, unreachable_pub)]

pub mod bridge_process;
pub mod client_tools;
pub mod openclaw;
pub mod real_claude;

pub use synthesis_test_harness::*;
