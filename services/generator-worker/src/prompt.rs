//! Versioned prompt templates (`templates/<version>/*.md`, compiled in) and their
//! renderer. The version is part of every cache key, so changing a template means
//! adding `templates/v2/` and bumping [`TEMPLATE_VERSION`], never editing v1.
//!
//! Template syntax: `{{name}}` inserts a value; `{{#name}}…{{/name}}` keeps its
//! body only when the value is non-empty; `{{^name}}…{{/name}}` only when empty.

use crate::job::{Job, Kind};
use contexten_llm::Message;

/// The template set in use.
pub const TEMPLATE_VERSION: &str = "v1";

const SYSTEM: &str = include_str!("../templates/v1/system.md");
const NEW_CODE: &str = include_str!("../templates/v1/new_code.md");
const DIFF: &str = include_str!("../templates/v1/diff.md");
const REPAIR: &str = include_str!("../templates/v1/repair.md");

/// Renders `template` with `vars`; unknown names render empty. Values are
/// inserted verbatim (never re-scanned for template syntax).
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let value = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| *v)
    };
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let tag = &after[..end];
        let tail = &after[end + 2..];
        if let Some(name) = tag.strip_prefix('#').or_else(|| tag.strip_prefix('^')) {
            let close = format!("{{{{/{name}}}}}");
            let (body, remainder) = match tail.find(&close) {
                Some(at) => (&tail[..at], &tail[at + close.len()..]),
                None => (tail, ""),
            };
            let keep = value(name).trim().is_empty() == tag.starts_with('^');
            if keep {
                out.push_str(&render(body, vars));
            }
            rest = remainder;
        } else {
            out.push_str(value(tag));
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// The first messages of a job: system and user.
pub fn messages(job: &Job) -> Vec<Message> {
    let language = job
        .language
        .map_or("as in the surrounding code", |l| l.name());
    let fence = job.language.map_or("", |l| l.name());
    let vars = [
        ("request", job.request.as_str()),
        ("language", language),
        ("fence", fence),
        ("symbol", job.symbol.as_deref().unwrap_or("")),
        ("symbol_kind", job.symbol_kind.as_str()),
        ("target_file", job.target_file.as_deref().unwrap_or("")),
        ("target_code", job.target_code.as_deref().unwrap_or("")),
        ("usages", job.usages.as_str()),
        ("context", job.context.as_str()),
    ];
    let user = match job.kind {
        Kind::NewCode => render(NEW_CODE, &vars),
        Kind::Diff => render(DIFF, &vars),
    };
    vec![Message::system(SYSTEM.trim()), Message::user(user.trim())]
}

/// The repair round's message: the validation error and what to send again.
pub fn repair(job: &Job, error: &str) -> Message {
    let (what, fence) = match job.kind {
        Kind::NewCode => ("code", job.language.map_or("", |l| l.name())),
        Kind::Diff => ("unified diff", "diff"),
    };
    Message::user(
        render(
            REPAIR,
            &[("error", error), ("what", what), ("fence", fence)],
        )
        .trim(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_values_render_once() {
        let t = "a {{x}}{{#y}} y={{y}}{{/y}}{{^y}} no-y{{/y}}.";
        assert_eq!(render(t, &[("x", "1"), ("y", "2")]), "a 1 y=2.");
        assert_eq!(render(t, &[("x", "{{y}}")]), "a {{y}} no-y.");
    }

    #[test]
    fn templates_have_no_unrendered_tags() {
        let job = Job::sample();
        for message in messages(&job) {
            assert!(!message.content.contains("{{"), "{}", message.content);
        }
        assert!(messages(&job)[1].content.contains("parse_duration"));
        assert!(!repair(&job, "boom").content.contains("{{"));
    }
}
