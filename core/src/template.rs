//! A graph's text is a Jinja2 template (minijinja), rendered with the host's
//! [`Facts`] before it is parsed as YAML: `{{ host.name }}`,
//! `{% if host.os == "debian" %}`. Local files and deploys alike.
//!
//! - A text with no template syntax (`{{`, `{%`, `{#`) is returned as it is,
//!   without running the engine: the original's examples run unchanged.
//! - An undefined variable is an error (a typo must not render as empty).
//! - The trailing newline is kept (Jinja2 drops it by default).
//! - Rendering is bounded ([`FUEL`]): a deploy cannot make every agent loop.

use std::borrow::Cow;
use std::fmt;

use crate::facts::Facts;

/// Instructions one render may run (minijinja's fuel): far beyond any
/// graph a person writes (a loop over 100 000 items costs about 10 per
/// item), small enough that a runaway template stops within a second.
pub const FUEL: u64 = 10_000_000;

/// A template that does not render, located in its file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RenderError {
    pub file: String,
    /// 1-based, when minijinja knows it.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": template: {}", self.message)
    }
}

/// Whether `text` uses template syntax at all.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// Renders `text` (named `file` in errors) for the host `facts` describe.
pub fn render<'a>(file: &str, text: &'a str, facts: &Facts) -> Result<Cow<'a, str>, RenderError> {
    if !is_template(text) {
        return Ok(Cow::Borrowed(text));
    }
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    // YAML, not HTML: nothing is escaped.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let ctx = minijinja::context! { host => facts };
    env.render_named_str(file, text, ctx)
        .map(Cow::Owned)
        .map_err(|e| {
            let mut message = match e.detail() {
                Some(d) => format!("{}: {d}", e.kind()),
                None => e.kind().to_string(),
            };
            // minijinja names no undefined variable: the line shows it.
            if let Some(source) = e.line().and_then(|l| text.lines().nth(l.checked_sub(1)?)) {
                message += &format!(" in `{}`", source.trim());
            }
            RenderError {
                file: file.to_string(),
                line: e.line(),
                message,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str) -> Facts {
        Facts {
            name: name.into(),
            os: "debian".into(),
            os_version: "12".into(),
            cpus: 2,
            ips: vec!["127.0.0.2".into()],
            ..Facts::default()
        }
    }

    #[test]
    fn plain_text_renders_to_itself_without_the_engine() {
        let text = "graph: g\nresources:\n  exec:\n  - name: e\n    cmd: echo ${x} {a: b}\n";
        assert!(matches!(
            render("g.yaml", text, &facts("h1")),
            Ok(Cow::Borrowed(t)) if t == text
        ));
    }

    #[test]
    fn facts_render_and_the_newline_stays() {
        let text = "path: /tmp/{{ host.name }}\n{% if host.os == 'debian' %}deb: {{ host.os_version }}{% endif %}\nips: {{ host.ips | join(',') }}\n";
        let out = render("g.yaml", text, &facts("h1")).unwrap();
        assert_eq!(out, "path: /tmp/h1\ndeb: 12\nips: 127.0.0.2\n");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = render("g.yaml", "a: 1\nb: {{ host.nmae }}\n", &facts("h")).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string().starts_with("error: g.yaml:2: template: "),
            "{e}"
        );
        assert!(e.message.ends_with(" in `b: {{ host.nmae }}`"), "{e}");
        let e = render("g.yaml", "a\n\n{% if %}\n", &facts("h")).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(render("g.yaml", "{{ unknown }}", &facts("h")).is_err());
    }

    #[test]
    fn a_runaway_template_stops() {
        let text = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}";
        let e = render("g.yaml", text, &facts("h")).unwrap_err();
        assert!(e.message.contains("fuel"), "{e}");
    }
}
