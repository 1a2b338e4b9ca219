//! Why one resource's CheckApply failed: the resource kind's own error,
//! kept typed until the CLI (or a metrics observer) reports it. Shared, so a
//! failure that concerns several members (a directory's fsync, a package
//! transaction) is one value handed to each.

use std::sync::Arc;

use crate::account::AccountIoError;
use crate::exec::ExecError;
use crate::file::FileError;
use crate::hostname::HostnameError;
use crate::line::LineIoError;
use crate::mount::MountError;
use crate::msg::MsgError;
use crate::pkg::PkgError;
use crate::svc::SvcError;
use crate::sysctl::SysctlError;

/// Why one resource's CheckApply failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CheckApplyError {
    #[error(transparent)]
    File(Arc<FileError>),
    /// The file of a `line` could not be read or written (every line of it fails).
    #[error(transparent)]
    LineFile(Arc<LineIoError>),
    /// A `line` that cannot be edited in as it asks.
    #[error(transparent)]
    Line(mgmt_core::line::LineError),
    #[error(transparent)]
    Account(Arc<AccountIoError>),
    #[error(transparent)]
    Mount(Arc<MountError>),
    #[error(transparent)]
    Hostname(Arc<HostnameError>),
    #[error(transparent)]
    Sysctl(Arc<SysctlError>),
    #[error(transparent)]
    Exec(Arc<ExecError>),
    #[error(transparent)]
    Svc(Arc<SvcError>),
    #[error(transparent)]
    Msg(Arc<MsgError>),
    #[error(transparent)]
    Pkg(PkgError),
    /// The thread or task that ran it ended without a result (it panicked,
    /// or was cancelled).
    #[error("{what} task failed: {reason}")]
    Task { what: &'static str, reason: String },
}

macro_rules! from_kind_errors {
    ($($variant:ident($error:ty)),* $(,)?) => {
        $(impl From<$error> for CheckApplyError {
            fn from(e: $error) -> Self {
                CheckApplyError::$variant(Arc::new(e))
            }
        })*
    };
}

from_kind_errors!(
    File(FileError),
    LineFile(LineIoError),
    Account(AccountIoError),
    Mount(MountError),
    Hostname(HostnameError),
    Sysctl(SysctlError),
    Exec(ExecError),
    Svc(SvcError),
    Msg(MsgError),
);

impl From<mgmt_core::line::LineError> for CheckApplyError {
    fn from(e: mgmt_core::line::LineError) -> Self {
        CheckApplyError::Line(e)
    }
}

impl From<PkgError> for CheckApplyError {
    fn from(e: PkgError) -> Self {
        CheckApplyError::Pkg(e)
    }
}
