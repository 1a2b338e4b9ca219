//! Runs a system tool to completion (the shadow tools, mount(8)): its
//! stderr is the error, its stdout is not read.

use std::io;
use std::process::Stdio;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{command}` could not start: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Runs `cmd` (a program and its arguments); `shown` is how errors name it
/// (without secrets).
pub async fn run(cmd: &[&str], shown: String) -> Result<(), ToolError> {
    let out = tokio::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ToolError::Spawn {
            command: shown.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ToolError::Failed {
        command: shown,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}
