//! What each command prints: a table for people, or one JSON document for
//! scripts (`--output json`; the shapes are in README "The operator CLI" and
//! only ever gain fields).

use crate::{CliError, DeadLetter, QueueStats, RedisRoleReport};
use contexten_envelope::now_ms;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{BufRead, Write};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `contexten queues`.
pub fn queues_json(stats: &[QueueStats]) -> Value {
    let queues: Vec<Value> = stats
        .iter()
        .map(|q| {
            json!({
                "queue": q.queue,
                "stage": q.stage.as_str(),
                "kind": if q.dead { "dead" } else { "work" },
                "ready": q.ready,
                "consumers": q.consumers,
            })
        })
        .collect();
    json!({ "queues": queues })
}

pub fn queues_table(stats: &[QueueStats]) -> String {
    let mut out = format!("{:<40} {:>8} {:>10}\n", "queue", "ready", "consumers");
    for q in stats {
        let _ = writeln!(out, "{:<40} {:>8} {:>10}", q.queue, q.ready, q.consumers);
    }
    out
}

/// `contexten dead list`.
pub fn dead_list_json(letters: &[DeadLetter], with_body: bool) -> Value {
    let letters: Vec<Value> = letters.iter().map(|l| l.to_json(with_body)).collect();
    json!({ "count": letters.len(), "dead_letters": letters })
}

pub fn dead_list_table(letters: &[DeadLetter], with_body: bool) -> String {
    let mut out = format!(
        "{:<9} {:<38} {:<22} {:>8} {:>7}  detail\n",
        "stage", "task_id", "reason", "age", "attempt"
    );
    let now = now_ms();
    for l in letters {
        let _ = writeln!(
            out,
            "{:<9} {:<38} {:<22} {:>8} {:>7}  {}",
            l.stage.as_str(),
            l.task_id.as_deref().unwrap_or("-"),
            l.reason,
            l.age_secs(now).map_or_else(|| "?".into(), age),
            l.attempt,
            cut(&l.detail, 80),
        );
        if with_body {
            let _ = writeln!(out, "          {}", String::from_utf8_lossy(&l.body));
        }
    }
    let _ = write!(out, "{} dead letter(s)", letters.len());
    out.push('\n');
    out
}

/// `10s`, `5m`, `3h`, `2d`: the largest whole unit.
fn age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// What `dead replay` or `dead purge` matched and did.
#[derive(Debug)]
pub struct ActionReport {
    /// `replay` or `purge`.
    pub action: &'static str,
    pub dry_run: bool,
    /// Letters that match the filters (what a run would touch).
    pub matched: usize,
    /// Letters replayed or purged (for a dry run: those that would be).
    pub done: Vec<DeadLetter>,
    /// Letters left in place after an error, with it.
    pub failed: Vec<(DeadLetter, String)>,
}

fn letter_ref(l: &DeadLetter) -> Value {
    json!({
        "stage": l.stage.as_str(),
        "message_id": l.message_id,
        "task_id": l.task_id,
        "reason": l.reason,
    })
}

impl ActionReport {
    pub fn to_json(&self) -> Value {
        let failed: Vec<Value> = self
            .failed
            .iter()
            .map(|(l, error)| {
                let mut v = letter_ref(l);
                v["error"] = json!(error);
                v
            })
            .collect();
        json!({
            "action": self.action,
            "dry_run": self.dry_run,
            "matched": self.matched,
            "done": if self.dry_run { 0 } else { self.done.len() },
            "messages": self.done.iter().map(letter_ref).collect::<Vec<_>>(),
            "failed": failed,
        })
    }

    pub fn to_table(&self) -> String {
        let verb = match self.action {
            "replay" => "replayed",
            _ => "purged",
        };
        let mut out = String::new();
        for l in &self.done {
            let _ = writeln!(
                out,
                "{:<9} {:<38} {:<22} {}",
                l.stage.as_str(),
                l.task_id.as_deref().unwrap_or("-"),
                l.reason,
                l.message_id.as_deref().unwrap_or("-"),
            );
        }
        for (l, error) in &self.failed {
            let _ = writeln!(
                out,
                "FAILED {} {}: {error}",
                l.stage.as_str(),
                l.message_id.as_deref().unwrap_or("-"),
            );
        }
        if self.dry_run {
            let _ = writeln!(
                out,
                "dry run: would have {verb} {} dead letter(s); nothing was touched",
                self.matched
            );
        } else {
            let _ = writeln!(
                out,
                "{verb} {} of {} dead letter(s){}",
                self.done.len(),
                self.matched,
                if self.failed.is_empty() {
                    String::new()
                } else {
                    format!(", {} failed", self.failed.len())
                }
            );
        }
        out
    }
}

/// `contexten task <id>`.
pub fn task_json(task: &str, status: &Value) -> Value {
    json!({ "task_id": task, "status": status })
}

pub fn task_table(task: &str, status: &Value) -> String {
    let mut out = format!("task {task}\n");
    if let Some(fields) = status.as_object() {
        for (key, value) in fields {
            if key == "timings" || key == "history" {
                continue;
            }
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let _ = writeln!(out, "  {key:<16} {}", cut(&shown, 100));
        }
    }
    if let Some(timings) = status["timings"].as_object() {
        out.push_str("timings:\n");
        for (stage, t) in timings {
            let (start, end) = (t["started_at_ms"].as_u64(), t["finished_at_ms"].as_u64());
            let took = match (start, end) {
                (Some(s), Some(e)) => format!("{} ms", e.saturating_sub(s)),
                _ => t.to_string(),
            };
            let _ = writeln!(out, "  {stage:<16} {took}");
        }
    }
    if let Some(history) = status["history"].as_array() {
        out.push_str("history:\n");
        for step in history {
            let _ = writeln!(
                out,
                "  {:<16} {}",
                step["step"].as_str().unwrap_or_default(),
                step["outcome"].as_str().unwrap_or_default()
            );
        }
    }
    out
}

/// `contexten redis`.
pub fn redis_json(reports: &[RedisRoleReport]) -> Value {
    let roles: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "role": r.role,
                "policy": r.policy,
                "appendonly": r.appendonly,
                "maxmemory": r.maxmemory,
                "used_memory": r.used_memory,
                "warnings": r.warnings,
            })
        })
        .collect();
    json!({ "shared": reports.len() == 1, "roles": roles })
}

pub fn redis_table(reports: &[RedisRoleReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let _ = writeln!(
            out,
            "{:<8} policy={} appendonly={} maxmemory={} used_memory={}",
            r.role,
            shown(&r.policy),
            shown(&r.appendonly),
            shown(&r.maxmemory.map(|m| m.to_string())),
            shown(&r.used_memory.map(|m| m.to_string())),
        );
        if r.policy.is_none() {
            out.push_str(
                "  note: CONFIG GET is not allowed here; check the policy in the service's settings\n",
            );
        }
        for warning in &r.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    if reports.len() == 1 {
        out.push_str(
            "(records and caches share this Redis: REDIS_RECORDS_URL is unset or equal to REDIS_URL)\n",
        );
    }
    out
}

/// The document printed on stdout for a failure under `--output json` (the
/// message also goes to stderr).
pub fn error_json(error: &CliError) -> Value {
    let code = error.exit_code();
    json!({
        "error": {
            "exit_code": code.code(),
            "kind": code.kind(),
            "message": error.to_string(),
        }
    })
}

/// Asks `question` on `out` and reads one answer from `input`: only `y` or
/// `yes` (any case) confirms; anything else, or no answer, declines.
pub fn confirm(question: &str, input: &mut impl BufRead, out: &mut impl Write) -> bool {
    let _ = write!(out, "{question} [y/N] ");
    let _ = out.flush();
    let mut answer = String::new();
    if input.read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        for (answer, confirmed) in [
            ("y\n", true),
            ("YES\n", true),
            ("n\n", false),
            ("\n", false),
            ("", false),
            ("yep\n", false),
        ] {
            let mut shown = Vec::new();
            let got = confirm("Replay 3?", &mut answer.as_bytes(), &mut shown);
            assert_eq!(got, confirmed, "{answer:?}");
            assert_eq!(String::from_utf8(shown).unwrap(), "Replay 3? [y/N] ");
        }
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(age(59), "59s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(7300), "2h");
        assert_eq!(age(3 * 86_400 + 5), "3d");
    }
}
