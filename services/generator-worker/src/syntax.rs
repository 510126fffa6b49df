//! Syntax validation with the official tree-sitter grammars: generated code is
//! accepted only when its tree has no ERROR or MISSING node. Code is parsed,
//! never executed.

use std::path::Path;
use tree_sitter::{Node, Parser};

/// The languages the generator checks: codemap's (one extension table for the
/// fleet), those it has a grammar for.
pub use contexten_codemap::Language;

/// The parsed language of a file name's extension (any case), `None` for a
/// language without a grammar.
pub fn language_of(path: &str) -> Option<Language> {
    let ext = Path::new(path).extension()?.to_str()?.to_ascii_lowercase();
    Some(Language::from_extension(&ext)).filter(|language| language.is_parsed())
}

/// Where and why code does not parse (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{language} syntax error at line {line}, column {column}: {message}")]
pub struct SyntaxError {
    pub language: &'static str,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses `code` as `language`; `Err` names the first ERROR or MISSING node.
/// C code also passes as C++: a `.h` file is read as C by the language table,
/// and a header may be either.
pub fn check(code: &str, language: Language) -> Result<(), SyntaxError> {
    match check_as(code, language) {
        Err(error) if language == Language::C => check_as(code, Language::Cpp).map_err(|_| error),
        checked => checked,
    }
}

fn check_as(code: &str, language: Language) -> Result<(), SyntaxError> {
    let mut parser = Parser::new();
    let fail = |message: String| SyntaxError {
        language: language.name(),
        line: 1,
        column: 1,
        message,
    };
    let grammar = language
        .grammar()
        .ok_or_else(|| fail("no grammar for this language".into()))?;
    parser
        .set_language(&grammar)
        .map_err(|e| fail(format!("grammar unavailable: {e}")))?;
    let tree = parser
        .parse(code, None)
        .ok_or_else(|| fail("the parser gave up".into()))?;
    let root = tree.root_node();
    if code.trim().is_empty() {
        return Err(fail("the code is empty".into()));
    }
    if !root.has_error() {
        return Ok(());
    }
    let node = first_problem(root).unwrap_or(root);
    let position = node.start_position();
    let message = if node.is_missing() {
        format!("missing `{}`", node.kind())
    } else {
        let text: String = code
            .get(node.byte_range())
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        format!("unexpected `{}`", text.lines().next().unwrap_or("").trim())
    };
    Err(SyntaxError {
        language: language.name(),
        line: position.row + 1,
        column: position.column + 1,
        message,
    })
}

/// The first ERROR or MISSING node in document order.
fn first_problem(node: Node<'_>) -> Option<Node<'_>> {
    if node.is_error() || node.is_missing() {
        return Some(node);
    }
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        if child.has_error()
            && let Some(found) = first_problem(child)
        {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpp_header_passes_as_c_and_broken_c_still_fails() {
        let header = "#pragma once\nnamespace geo {\nclass Shape {\npublic:\n  virtual double area() const = 0;\n};\n}\n";
        assert_eq!(language_of("include/geo/shape.h"), Some(Language::C));
        assert_eq!(check(header, Language::C), Ok(()));
        let broken = check("int add(int a, int b {\n  return a + b;\n}\n", Language::C);
        assert_eq!(broken.map_err(|e| e.language), Err("c"));
    }

    #[test]
    fn valid_code_passes_in_every_language() {
        let samples = [
            (
                Language::Rust,
                "pub fn add(a: i32, b: i32) -> i32 { a + b }\n",
            ),
            (
                Language::Python,
                "def add(a: int, b: int) -> int:\n    return a + b\n",
            ),
            (
                Language::TypeScript,
                "export function add(a: number, b: number): number { return a + b; }\n",
            ),
            (
                Language::Tsx,
                "export const A = (p: {n: number}) => <div>{p.n}</div>;\n",
            ),
            (
                Language::JavaScript,
                "export const add = (a, b) => a + b;\n",
            ),
            (
                Language::Go,
                "package m\n\nfunc Add(a, b int) int { return a + b }\n",
            ),
            (
                Language::Java,
                "class M { static int add(int a, int b) { return a + b; } }\n",
            ),
        ];
        for (language, code) in samples {
            assert_eq!(check(code, language), Ok(()), "{language:?}");
        }
    }

    #[test]
    fn errors_and_missing_nodes_are_located() {
        let err = check("def add(a, b):\n    return (a +\n", Language::Python).unwrap_err();
        assert_eq!(err.language, "python");
        assert!(err.line >= 2, "{err}");
        let err = check("fn add() -> i32 { 1 + }\n", Language::Rust).unwrap_err();
        assert_eq!(err.line, 1);
        let err = check("class M { int x = 1 }", Language::Java).unwrap_err();
        assert!(err.message.contains("missing"), "{err}");
        assert!(check("   \n", Language::Go).is_err());
        assert!(
            check(
                "Here is the code you asked for: def f(): pass",
                Language::Python
            )
            .is_err()
        );
    }

    #[test]
    fn languages_come_from_hints_and_extensions() {
        assert_eq!(Language::from_name("PY"), Some(Language::Python));
        assert_eq!(Language::from_name("golang"), Some(Language::Go));
        assert_eq!(Language::from_name("cobol"), None);
        assert_eq!(language_of("src/app/page.tsx"), Some(Language::Tsx));
        assert_eq!(language_of("lib.rs"), Some(Language::Rust));
        assert_eq!(language_of("README.md"), None);
        assert_eq!(language_of("SRC/MAIN.PY"), Some(Language::Python));
        assert!(check("x", Language::Other).is_err());
    }
}
