//! A located problem in a graph file: what the compiler reports, as an error
//! or a warning the graph keeps.

use std::fmt;

/// Where a problem is: a position in the file and/or the resource it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line and column, when known.
    pub line_col: Option<(u64, u64)>,
    /// `Kind[name]` of the resource concerned, when there is one.
    pub subject: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((l, c)) = self.line_col {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(s) = &self.subject {
            write!(f, "{s}: ")?;
        }
        write!(f, "{}", self.message)
    }
}
