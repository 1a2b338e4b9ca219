//! The exec resource: run a command, optionally guarded by `ifcmd`, optionally
//! re-run on each line of a long-running `watchcmd`. Every command runs in its
//! own process group so a timeout or shutdown ends it and all its children.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mgmt_core::resource::{Command, ExecParams};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// Exec state kept across CheckApply calls.
#[derive(Debug)]
pub struct ExecRes {
    pub params: ExecParams,
    ran_once: bool,
    /// Set by the watch command before it sends an event, so CheckApply knows
    /// the event came from it.
    pub watch_fired: Arc<AtomicBool>,
}

impl ExecRes {
    pub fn new(params: ExecParams) -> Self {
        ExecRes {
            params,
            ran_once: false,
            watch_fired: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `cmd` when it is due: `ifcmd` exits 0, or (without `ifcmd`) on the
    /// first run, on a refresh, or when the watch command printed a line.
    /// Returns what ran (or would run with `apply == false`); empty = nothing due.
    pub async fn check_apply(
        &mut self,
        apply: bool,
        refresh: bool,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Vec<String>, ExecError> {
        let fired = self.watch_fired.swap(false, Ordering::SeqCst);
        let due = match &self.params.ifcmd {
            // The guard gets the same time limit as the command it guards.
            Some(ifcmd) => run(
                ifcmd,
                self.params.timeout_s.map(Duration::from_secs),
                cancel,
            )
            .await
            .map(|o| o.success)
            .map_err(|e| ExecError::Guard(Box::new(e)))?,
            None => !self.ran_once || refresh || fired,
        };
        if !due {
            return Ok(Vec::new());
        }
        let what = format!("ran {:?}", self.params.cmd.cmd);
        if !apply {
            return Ok(vec![format!("would run {:?}", self.params.cmd.cmd)]);
        }
        let timeout = self.params.timeout_s.map(Duration::from_secs);
        let out = run(&self.params.cmd, timeout, cancel).await?;
        if !out.success {
            return Err(ExecError::Failed {
                cmd: self.params.cmd.cmd.clone(),
                status: out.status,
                stderr_tail: out.stderr_tail,
            });
        }
        self.ran_once = true;
        Ok(vec![what])
    }
}

/// Why a command did not do what it was run for. The texts are what the
/// logs and the run report say.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty command")]
    Empty,
    /// It could not be started, or waited for.
    #[error("{cmd:?}: {source}")]
    Os { cmd: String, source: std::io::Error },
    #[error("{cmd:?} timed out after {seconds} s; its process group was killed")]
    TimedOut { cmd: String, seconds: u64 },
    #[error("{cmd:?} stopped: shutting down")]
    Stopped { cmd: String },
    /// It ran and exited non-zero (or was killed by a signal).
    #[error("{cmd:?} {status}{stderr_tail}")]
    Failed {
        cmd: String,
        status: String,
        stderr_tail: String,
    },
    /// The `ifcmd` guard could not run.
    #[error("ifcmd: {0}")]
    Guard(Box<ExecError>),
}

/// What a finished command did.
pub struct RunOutput {
    pub success: bool,
    pub status: String,
    pub stderr_tail: String,
}

/// Builds the OS command: split on whitespace, or `shell -c cmd`.
pub fn os_command(c: &Command) -> Result<tokio::process::Command, ExecError> {
    let mut cmd = match &c.shell {
        Some(shell) => {
            let mut cmd = tokio::process::Command::new(shell);
            cmd.arg("-c").arg(&c.cmd);
            cmd
        }
        None => {
            let mut words = c.cmd.split_whitespace();
            let prog = words.next().ok_or(ExecError::Empty)?;
            let mut cmd = tokio::process::Command::new(prog);
            cmd.args(words);
            cmd
        }
    };
    cmd.process_group(0).stdin(Stdio::null());
    Ok(cmd)
}

/// Kills a process group when dropped, unless disarmed: a cancelled or timed
/// out command never outlives its CheckApply.
pub struct GroupKiller(Option<i32>);

impl GroupKiller {
    pub fn new(pid: Option<u32>) -> Self {
        GroupKiller(pid.and_then(|p| i32::try_from(p).ok()))
    }
    pub fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion, killing its group on timeout or cancellation.
pub async fn run(
    c: &Command,
    timeout: Option<Duration>,
    cancel: &mut watch::Receiver<bool>,
) -> Result<RunOutput, ExecError> {
    let os = |source| ExecError::Os {
        cmd: c.cmd.clone(),
        source,
    };
    let mut cmd = os_command(c)?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(os)?;
    let mut killer = GroupKiller::new(child.id());
    // Read output beside the wait: the command is done when it exits, not when
    // its pipes close (a daemon it started may hold them open forever).
    let stdout = tokio::spawn(read_tail(child.stdout.take()));
    let stderr = tokio::spawn(read_tail(child.stderr.take()));
    let timeout_fut = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.map_err(os)?,
        () = timeout_fut => {
            killer.kill();
            return Err(ExecError::TimedOut {
                cmd: c.cmd.clone(),
                seconds: timeout.unwrap_or_default().as_secs(),
            });
        }
        _ = cancel.wait_for(|&stop| stop) => {
            killer.kill();
            return Err(ExecError::Stopped { cmd: c.cmd.clone() });
        }
    };
    killer.disarm();
    let stdout = output_after_exit(stdout).await;
    let stderr = output_after_exit(stderr).await;
    for line in String::from_utf8_lossy(&stdout).lines() {
        tracing::debug!("{:?}: {line}", c.cmd);
    }
    let stderr = String::from_utf8_lossy(&stderr);
    let tail = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    let status_text = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    };
    Ok(RunOutput {
        success: status.success(),
        status: status_text,
        stderr_tail: tail,
    })
}

/// How much of a command's output is kept (the end of it).
const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// Reads a pipe to its end, keeping the last [`OUTPUT_TAIL_BYTES`].
async fn read_tail(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > OUTPUT_TAIL_BYTES {
            kept.drain(..kept.len() - OUTPUT_TAIL_BYTES);
        }
    }
    kept
}

/// The output of an exited command: what its pipes delivered by their end,
/// or within a short grace if something it left running still holds them.
async fn output_after_exit(mut reader: tokio::task::JoinHandle<Vec<u8>>) -> Vec<u8> {
    match tokio::time::timeout(Duration::from_millis(200), &mut reader).await {
        Ok(Ok(out)) => out,
        _ => {
            reader.abort();
            Vec::new()
        }
    }
}

/// Runs a watch command until it exits, calling `on_line` for each line it
/// prints. Returns why it stopped. Dropping the future kills its group.
pub async fn watch_lines(c: &Command, mut on_line: impl FnMut()) -> String {
    let mut cmd = match os_command(c) {
        Ok(cmd) => cmd,
        Err(e) => return e.to_string(),
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return format!("watchcmd {:?}: {e}", c.cmd),
    };
    let mut killer = GroupKiller::new(child.id());
    let Some(stdout) = child.stdout.take() else {
        return "watchcmd has no stdout".into();
    };
    // Lines as bytes: output need not be UTF-8, and any line is an event.
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let read_error = loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => break None,
            Ok(_) => on_line(),
            Err(e) => break Some(e),
        }
    };
    if let Some(e) = read_error {
        // Still running but unreadable: end it rather than wait forever.
        killer.kill();
        return format!("watchcmd {:?}: reading its output: {e}", c.cmd);
    }
    match child.wait().await {
        Ok(status) => format!("watchcmd {:?} exited ({status})", c.cmd),
        Err(e) => format!("watchcmd {:?}: {e}", c.cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(cmd: &str) -> Command {
        Command {
            cmd: cmd.into(),
            shell: Some("/bin/sh".into()),
        }
    }

    fn params(cmd: Command) -> ExecParams {
        ExecParams {
            cmd,
            timeout_s: None,
            watch: None,
            ifcmd: None,
        }
    }

    #[tokio::test]
    async fn runs_once_then_only_on_refresh_or_watch() {
        let (_tx, mut rx) = watch::channel(false);
        let mut e = ExecRes::new(params(Command {
            cmd: "true".into(),
            shell: None,
        }));
        assert_eq!(
            e.check_apply(true, false, &mut rx).await.unwrap(),
            vec!["ran \"true\"".to_string()]
        );
        assert!(
            e.check_apply(true, false, &mut rx)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(e.check_apply(true, true, &mut rx).await.unwrap().len(), 1);
        e.watch_fired.store(true, Ordering::SeqCst);
        assert_eq!(e.check_apply(true, false, &mut rx).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn ifcmd_guards_cmd_and_noop_does_not_run() {
        let (_tx, mut rx) = watch::channel(false);
        let dir = std::env::temp_dir().join(format!("mgmt-exec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("ran");
        let mut p = params(sh(&format!("echo x >> {}", marker.display())));
        p.ifcmd = Some(sh(&format!("! test -e {}", marker.display())));
        let mut e = ExecRes::new(p);
        assert_eq!(e.check_apply(false, false, &mut rx).await.unwrap().len(), 1);
        assert!(!marker.exists(), "check-only must not run cmd");
        assert_eq!(e.check_apply(true, false, &mut rx).await.unwrap().len(), 1);
        assert!(
            e.check_apply(true, true, &mut rx).await.unwrap().is_empty(),
            "ifcmd now fails"
        );
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn failure_reports_status_and_stderr() {
        let (_tx, mut rx) = watch::channel(false);
        let mut e = ExecRes::new(params(sh("echo oops >&2; exit 3")));
        let err = e.check_apply(true, false, &mut rx).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"echo oops >&2; exit 3\" exited with status 3: oops"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let (_tx, mut rx) = watch::channel(false);
        let dir = std::env::temp_dir().join(format!("mgmt-exec-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        // The grandchild would outlive a plain kill of the shell.
        let mut p = params(sh(&format!(
            "sleep 30 & echo $! > {}; wait",
            pidfile.display()
        )));
        p.timeout_s = Some(1);
        let err = ExecRes::new(p)
            .check_apply(true, false, &mut rx)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExecError::TimedOut { seconds: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("timed out after 1 s"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Wait (bounded) for the kernel to reap it; a zombie counts as dead.
        let gone = (0..200).any(|_| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
                .unwrap_or(false);
            if alive {
                std::thread::sleep(Duration::from_millis(10));
            }
            !alive
        });
        assert!(gone, "grandchild {pid} survived the timeout");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn cancel_stops_a_running_command() {
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            ExecRes::new(params(sh("sleep 30")))
                .check_apply(true, false, &mut rx)
                .await
        });
        tx.send(true).unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, ExecError::Stopped { .. }), "{err}");
        assert!(err.to_string().contains("shutting down"), "{err}");
    }

    #[tokio::test]
    async fn a_command_that_leaves_a_daemon_behind_completes() {
        let (_tx, mut rx) = watch::channel(false);
        let dir = std::env::temp_dir().join(format!("mgmt-exec-daemon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        // The background sleep inherits stdout and stderr and keeps them open.
        let mut p = params(sh(&format!("sleep 30 & echo $! > {}", pidfile.display())));
        p.timeout_s = Some(20);
        let out = ExecRes::new(p).check_apply(true, false, &mut rx).await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        assert_eq!(
            out.unwrap().len(),
            1,
            "cmd completes when it exits, not when its pipes close"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn watch_lines_counts_each_line() {
        let mut n = 0;
        let why = watch_lines(&sh("printf 'a\\nb\\n\\377\\376\\nc\\n'"), || n += 1).await;
        assert_eq!(n, 4, "a line that is not UTF-8 is an event too");
        assert!(why.contains("exited"), "{why}");
    }
}
