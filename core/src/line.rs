//! The `line` kind's edit of a text file, pure: io reads the file once,
//! [`edit`]s it with every `line` resource of that file (AutoGroup puts them
//! in one vertex) and writes the result once, atomically, if it differs.
//!
//! Rules (Ansible's `lineinfile`, one resource after another in member
//! order):
//! - **present** with `match`: the last line the regex matches becomes
//!   `line`. With no match, or without `match`, a file that already holds
//!   `line` is left alone; otherwise `line` is inserted after the last line
//!   `after` matches, or before the first line `before` matches (`BOF`: the
//!   top), or at the end.
//! - **absent**: every line `match` matches (without it: every line equal to
//!   `line`) is removed.
//!
//! Lines are compared without their `\r`, so CRLF files keep their endings.
//! A changed file ends with a newline.

use regex::Regex;

use crate::resource::{LineParams, Presence};

/// Why one `line` resource could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("{0} does not exist (set `create: true` to create it)")]
    Missing(String),
    /// The compiler checks every regex; this is only for a value that
    /// bypassed it.
    #[error("invalid regular expression {pattern:?}: {error}")]
    Regex { pattern: String, error: String },
}

/// The outcome of editing one file with its `line` resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    /// The new text, if it differs from the file's (`None`: nothing to write).
    pub text: Option<String>,
    /// For each member, in order, what it changed (empty: it held already),
    /// or why it could not be applied.
    pub outcomes: Vec<Result<Vec<String>, LineError>>,
}

/// The value `before` takes for "at the top of the file".
pub const BOF: &str = "BOF";
/// The value `after` takes for "at the end of the file" (the default).
pub const EOF: &str = "EOF";

/// Edits `text` (`None`: the file does not exist) with `members`, all of
/// one path.
pub fn edit(text: Option<&str>, members: &[&LineParams]) -> Edited {
    let create = members
        .iter()
        .any(|m| m.create && m.state == Presence::Present);
    let Some(text) = text.or(create.then_some("")) else {
        // No file, and nobody creates it: absent lines are absent already.
        let outcomes = members
            .iter()
            .map(|m| match m.state {
                Presence::Absent => Ok(Vec::new()),
                Presence::Present => Err(LineError::Missing(m.path.clone())),
            })
            .collect();
        return Edited {
            text: None,
            outcomes,
        };
    };
    // Split on `\n` only (`str::lines` would drop the `\r` of CRLF lines).
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut lines: Vec<String> = if text.is_empty() {
        Vec::new()
    } else {
        body.split('\n').map(str::to_string).collect()
    };
    let outcomes: Vec<_> = members.iter().map(|m| apply(&mut lines, m)).collect();
    let mut new = lines.join("\n");
    if !lines.is_empty() {
        new.push('\n');
    }
    if new == text {
        // Members that undid each other's change (the compiler refuses the
        // plain cases) leave the file as it was: nothing was changed.
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.map(|_| Vec::new()))
            .collect();
        return Edited {
            text: None,
            outcomes,
        };
    }
    Edited {
        text: Some(new),
        outcomes,
    }
}

fn regex(pattern: &str) -> Result<Regex, LineError> {
    Regex::new(pattern).map_err(|e| LineError::Regex {
        pattern: pattern.to_string(),
        error: e.to_string(),
    })
}

fn same(a: &str, b: &str) -> bool {
    a.strip_suffix('\r').unwrap_or(a) == b
}

fn apply(lines: &mut Vec<String>, m: &LineParams) -> Result<Vec<String>, LineError> {
    let matches = m.matches.as_deref().map(regex).transpose()?;
    let hit = |l: &str| match &matches {
        Some(re) => re.is_match(l.strip_suffix('\r').unwrap_or(l)),
        None => same(l, &m.line),
    };
    match m.state {
        Presence::Absent => {
            let before = lines.len();
            lines.retain(|l| !hit(l));
            let removed = before - lines.len();
            Ok(match removed {
                0 => Vec::new(),
                1 => vec!["removed 1 line".to_string()],
                n => vec![format!("removed {n} lines")],
            })
        }
        Presence::Present => {
            if let Some(i) = lines.iter().rposition(|l| hit(l)) {
                if same(&lines[i], &m.line) {
                    return Ok(Vec::new());
                }
                let cr = if lines[i].ends_with('\r') { "\r" } else { "" };
                lines[i] = format!("{}{cr}", m.line);
                return Ok(vec![format!("replaced line {}", i + 1)]);
            }
            if lines.iter().any(|l| same(l, &m.line)) {
                return Ok(Vec::new());
            }
            let at = match (&m.after, &m.before) {
                (Some(a), _) if a != EOF => {
                    let re = regex(a)?;
                    lines.iter().rposition(|l| re.is_match(l)).map(|i| i + 1)
                }
                (_, Some(b)) if b == BOF => Some(0),
                (_, Some(b)) => {
                    let re = regex(b)?;
                    lines.iter().position(|l| re.is_match(l))
                }
                _ => None,
            };
            let at = at.unwrap_or(lines.len());
            lines.insert(at, m.line.clone());
            Ok(vec![format!("inserted line {}", at + 1)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(line: &str) -> LineParams {
        LineParams {
            path: "/etc/f".into(),
            line: line.into(),
            matches: None,
            state: Presence::Present,
            after: None,
            before: None,
            create: false,
        }
    }

    fn run(text: Option<&str>, members: &[LineParams]) -> Edited {
        let refs: Vec<&LineParams> = members.iter().collect();
        edit(text, &refs)
    }

    #[test]
    fn a_missing_line_is_appended_once() {
        let e = run(Some("a\nb"), &[present("c")]);
        assert_eq!(e.text.as_deref(), Some("a\nb\nc\n"));
        assert_eq!(e.outcomes, vec![Ok(vec!["inserted line 3".to_string()])]);
        let again = run(e.text.as_deref(), &[present("c")]);
        assert_eq!(again.text, None);
        assert_eq!(again.outcomes, vec![Ok(vec![])]);
    }

    #[test]
    fn match_replaces_the_last_matching_line() {
        let mut p = present("PermitRootLogin no");
        p.matches = Some("^#?PermitRootLogin".into());
        let text = "#PermitRootLogin yes\nPort 22\nPermitRootLogin yes\n";
        let e = run(Some(text), std::slice::from_ref(&p));
        assert_eq!(
            e.text.as_deref(),
            Some("#PermitRootLogin yes\nPort 22\nPermitRootLogin no\n")
        );
        assert_eq!(run(e.text.as_deref(), &[p]).text, None);
    }

    #[test]
    fn a_match_that_misses_its_own_line_still_converges() {
        let mut p = present("bar");
        p.matches = Some("^foo".into());
        let e = run(Some("foo\n"), std::slice::from_ref(&p));
        assert_eq!(e.text.as_deref(), Some("bar\n"));
        assert_eq!(run(e.text.as_deref(), &[p]).text, None);
    }

    #[test]
    fn after_and_before_place_a_new_line() {
        let mut a = present("x");
        a.after = Some("^b".into());
        assert_eq!(
            run(Some("a\nb\nc\nb2\nd\n"), &[a]).text.as_deref(),
            Some("a\nb\nc\nb2\nx\nd\n")
        );
        let mut b = present("x");
        b.before = Some("^c".into());
        assert_eq!(
            run(Some("a\nc\nc\n"), &[b]).text.as_deref(),
            Some("a\nx\nc\nc\n")
        );
        let mut top = present("x");
        top.before = Some(BOF.into());
        assert_eq!(run(Some("a\n"), &[top]).text.as_deref(), Some("x\na\n"));
        let mut nowhere = present("x");
        nowhere.after = Some("^zzz".into());
        assert_eq!(run(Some("a\n"), &[nowhere]).text.as_deref(), Some("a\nx\n"));
    }

    #[test]
    fn absent_removes_every_match() {
        let mut p = present("");
        p.state = Presence::Absent;
        p.matches = Some("^#".into());
        let e = run(Some("#a\nb\n#c\n"), &[p.clone()]);
        assert_eq!(e.text.as_deref(), Some("b\n"));
        assert_eq!(e.outcomes, vec![Ok(vec!["removed 2 lines".to_string()])]);
        assert_eq!(run(Some("b\n"), &[p]).text, None);
    }

    #[test]
    fn a_missing_file_is_created_only_when_asked() {
        let e = run(None, &[present("a")]);
        assert_eq!(e.text, None);
        assert_eq!(
            e.outcomes,
            vec![Err(LineError::Missing("/etc/f".to_string()))]
        );
        let mut c = present("a");
        c.create = true;
        let e = run(None, &[c, present("b")]);
        assert_eq!(e.text.as_deref(), Some("a\nb\n"));
        let mut gone = present("a");
        gone.state = Presence::Absent;
        assert_eq!(run(None, &[gone]).outcomes, vec![Ok(vec![])]);
    }

    #[test]
    fn many_members_edit_one_text_in_order() {
        let members: Vec<LineParams> = (0..200).map(|i| present(&format!("l{i}"))).collect();
        let e = run(Some(""), &members);
        let text = e.text.unwrap();
        assert_eq!(text.lines().count(), 200);
        assert!(
            e.outcomes
                .iter()
                .all(|o| o.as_ref().is_ok_and(|c| c.len() == 1))
        );
        let again = run(Some(&text), &members);
        assert_eq!(again.text, None);
    }

    #[test]
    fn crlf_lines_keep_their_ending() {
        let mut p = present("b=2");
        p.matches = Some("^b=".into());
        let e = run(Some("a=1\r\nb=1\r\n"), std::slice::from_ref(&p));
        assert_eq!(e.text.as_deref(), Some("a=1\r\nb=2\r\n"));
        assert_eq!(run(e.text.as_deref(), &[p]).text, None);
    }

    #[test]
    fn members_that_undo_each_other_change_nothing() {
        let mut a = present("x");
        a.matches = Some("^x|^y".into());
        let mut b = present("y");
        b.matches = Some("^x|^y".into());
        let e = run(Some("y\n"), &[a, b]);
        assert_eq!(e.text, None);
        assert_eq!(e.outcomes, vec![Ok(vec![]), Ok(vec![])]);
    }
}
