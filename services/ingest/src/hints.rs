//! What a request names explicitly: file paths (including stack-trace frames),
//! symbols (`code` spans and `calls()`), the language of a code block, and a
//! repository URL, for the routing rules and the context worker.

use contexten_envelope::Hints;

const CODE_EXTENSIONS: &[&str] = &[
    "rs", "py", "js", "mjs", "ts", "tsx", "jsx", "go", "java", "kt", "rb", "c", "h", "cc", "cpp",
    "hpp", "cs", "swift", "php", "scala", "toml", "yaml", "yml", "json", "md", "sh", "sql", "lua",
    "ex", "exs", "erl", "hs", "ml", "vue", "svelte", "css", "html", "proto", "tf",
];
const MAX_HINTS: usize = 20;

/// Paths, symbols and language the text names explicitly (file paths, stack
/// trace frames, `code` spans and `calls()`), for the context worker.
pub fn extract_hints(text: &str) -> Hints {
    let mut hints = Hints::default();
    let push = |list: &mut Vec<String>, item: &str| {
        if !item.is_empty() && list.len() < MAX_HINTS && !list.iter().any(|x| x == item) {
            list.push(item.to_owned());
        }
    };
    for raw in text.split(|c: char| c.is_whitespace() || "()\"'<>,`[]{}|".contains(c)) {
        if raw.contains("://") {
            continue;
        }
        // `src/main.rs:10:5` and `file.py:3` (stack frames) lose their positions.
        let token = raw
            .trim_end_matches(['.', ',', ';', ':', '!', '?'])
            .split(':')
            .next()
            .unwrap_or("");
        let token = token.trim_start_matches("./");
        if let Some((stem, ext)) = token.rsplit_once('.')
            && !stem.is_empty()
            && !stem.ends_with('/')
            && CODE_EXTENSIONS.contains(&ext)
            && token
                .chars()
                .all(|c| c.is_alphanumeric() || "/._-".contains(c))
        {
            push(&mut hints.paths, token);
        }
    }
    // `symbol` spans and call-like `name(` tokens.
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let name = span.trim().trim_end_matches("()");
            if is_symbol(name) && !hints.paths.iter().any(|p| p == name) {
                push(&mut hints.symbols, name);
            }
        }
    }
    for word in text.split(|c: char| c.is_whitespace() || c == '`') {
        if let Some((name, _)) = word.split_once('(') {
            let name = name.trim_start_matches(['.', '*', '&']);
            if name.len() > 1 && is_symbol(name) {
                push(&mut hints.symbols, name);
            }
        }
    }
    hints.language = text.split("```").nth(1).and_then(|block| {
        let lang = block.lines().next()?.trim();
        (!lang.is_empty() && lang.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'))
            .then(|| lang.to_lowercase())
    });
    if hints.paths.len() == 1 {
        hints.target_file = hints.paths.first().cloned();
    }
    hints
}

fn is_symbol(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && s.len() <= 120
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '.')
}

/// The git servers whose repository URLs are recognised in any request.
pub const PUBLIC_GIT_SERVERS: [&str; 2] = ["https://github.com/", "https://gitlab.com/"];

/// A repository URL named in the text (`https://github.com/owner/repo`), as a
/// clone URL.
pub fn repository_in_text(text: &str) -> Option<String> {
    repository_on_servers(text, &PUBLIC_GIT_SERVERS)
}

/// A repository URL on one of `servers` (base URLs ending in `/`) named in the
/// text, as a clone URL (`<base><owner>/<repo>.git`).
pub fn repository_on_servers<S: AsRef<str>>(text: &str, servers: &[S]) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || "()<>\"'`|".contains(c))
        .find_map(|token| {
            let (base, rest) = servers
                .iter()
                .map(AsRef::as_ref)
                .find_map(|base| Some((base, token.strip_prefix(base)?)))?;
            let mut parts = rest.split('/');
            let owner = parts.next().filter(|s| !s.is_empty())?;
            let repo = parts.next().filter(|s| !s.is_empty())?;
            let repo = repo
                .trim_end_matches(['.', ',', ';'])
                .trim_end_matches(".git");
            let ok = |s: &str| s.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
            (ok(owner) && ok(repo) && !repo.is_empty()).then(|| format!("{base}{owner}/{repo}.git"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_paths_symbols_and_stack_frames() {
        let text = "Crash in `parse_duration`:\n```rust\nlet x = 1;\n```\n  at handler (src/api/routes.ts:10:5)\n  File \"app/main.py\", line 3\nsee https://github.com/o/r/blob/x.rs and call load_config()";
        let h = extract_hints(text);
        assert_eq!(h.paths, vec!["src/api/routes.ts", "app/main.py"]);
        assert!(h.symbols.contains(&"parse_duration".to_owned()), "{h:?}");
        assert!(h.symbols.contains(&"load_config".to_owned()), "{h:?}");
        assert_eq!(h.language.as_deref(), Some("rust"));
        assert_eq!(
            repository_in_text(text).as_deref(),
            Some("https://github.com/o/r.git")
        );
    }
}
