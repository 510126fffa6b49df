//! Cutting text to a character budget without splitting a UTF-8 character, and
//! finding the code fence left open by a cut.

/// The longest prefix of `text` with at most `max_chars` characters.
pub fn cut_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((byte, _)) => &text[..byte],
        None => text,
    }
}

/// Like [`cut_chars`] but ending at a line break when one is in the last half,
/// so a cut does not leave half a line of code.
pub fn cut_at_line(text: &str, max_chars: usize) -> &str {
    let cut = cut_chars(text, max_chars);
    if cut.len() == text.len() {
        return cut;
    }
    match cut.rfind('\n') {
        Some(at) if cut[..at].chars().count() >= max_chars / 2 => &cut[..at],
        _ => cut,
    }
}

/// The fence that closes the code block still open at the end of `text`, if any
/// (CommonMark: a fence is 3+ backticks or tildes, closed by a run of the same
/// character at least as long).
pub fn open_fence(text: &str) -> Option<String> {
    let mut open: Option<(char, usize)> = None;
    for line in text.lines() {
        let line = line.trim_start_matches(' ');
        let Some(first) = line.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let run = line.chars().take_while(|c| *c == first).count();
        if run < 3 {
            continue;
        }
        match open {
            None => open = Some((first, run)),
            Some((c, len)) if c == first && run >= len && line[run..].trim().is_empty() => {
                open = None
            }
            Some(_) => {}
        }
    }
    open.map(|(c, len)| c.to_string().repeat(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_never_split_a_character() {
        let text = "aé€😀b";
        for n in 0..=6 {
            let cut = cut_chars(text, n);
            assert_eq!(cut.chars().count(), n.min(5));
            assert!(text.starts_with(cut));
        }
    }

    #[test]
    fn an_open_fence_is_found_and_a_closed_one_is_not() {
        assert_eq!(open_fence("x\n```rust\nfn a() {}\n"), Some("```".into()));
        assert_eq!(open_fence("```rust\nfn a() {}\n```\n"), None);
        assert_eq!(open_fence("````\n```\nstill open"), Some("````".into()));
        assert_eq!(open_fence("~~~\ncode"), Some("~~~".into()));
    }

    #[test]
    fn line_cuts_prefer_a_line_break() {
        assert_eq!(cut_at_line("aaaa\nbbbb\ncccc", 12), "aaaa\nbbbb");
        assert_eq!(cut_at_line("short", 12), "short");
    }
}
