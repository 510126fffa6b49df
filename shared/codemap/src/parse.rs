//! Per-file analysis: definitions, imports and referenced identifiers from one
//! tree-sitter parse, plus the file's content terms for lexical ranking.
//!
//! The result depends only on (content, language, [`ANALYSER_VERSION`]), which is
//! what makes it cacheable by blob id.

use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Parser, QueryCursor, StreamingIterator};

use crate::bm25::Interned;
use crate::lang::Language;
use crate::tokens;

/// Bumped whenever the analysis output changes shape or meaning (invalidates caches).
/// 2: C++ destructors, operators and template headers; C/C++/C#/Ruby/PHP
/// signatures without a trailing `;` / `=`; PHP `require __DIR__ . '/x.php'`;
/// and the maps' include / using / require linking for those languages.
/// 3: members of containers nested past the query's start depth (C# nested
/// classes in namespace blocks, Ruby classes in two modules); C# fields,
/// events and delegates.
/// 4: C# destructors, operators, conversion operators and indexers; C#
/// property and indexer signatures end before their accessors.
pub const ANALYSER_VERSION: u32 = 4;

const MAX_SIGNATURE_CHARS: usize = 240;
const MAX_DOC_LINES: usize = 12;
const MAX_REF_LINES: usize = 6;
const MAX_QUERY_START_DEPTH: u32 = 6;

/// What a definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SymbolKind {
    /// Free function.
    Function,
    /// Function inside a class, impl or trait.
    Method,
    /// Constructor.
    Constructor,
    /// Class or record.
    Class,
    /// Struct or union.
    Struct,
    /// Enum.
    Enum,
    /// Interface or protocol.
    Interface,
    /// Rust trait.
    Trait,
    /// Type alias or other named type.
    Type,
    /// Module or namespace.
    Module,
    /// Macro.
    Macro,
    /// Constant or module-level binding.
    Constant,
    /// Package-level variable.
    Variable,
    /// Class field.
    Field,
    /// Rust impl block (a container, named after its type).
    Impl,
}

impl SymbolKind {
    fn from_capture(s: &str) -> Option<Self> {
        Some(match s {
            "function" => Self::Function,
            "method" => Self::Method,
            "constructor" => Self::Constructor,
            "class" => Self::Class,
            "struct" => Self::Struct,
            "enum" => Self::Enum,
            "interface" => Self::Interface,
            "trait" => Self::Trait,
            "type" => Self::Type,
            "module" => Self::Module,
            "macro" => Self::Macro,
            "constant" => Self::Constant,
            "variable" => Self::Variable,
            "field" => Self::Field,
            "impl" => Self::Impl,
            _ => return None,
        })
    }

    /// Whether the kind can contain other definitions.
    pub fn is_container(self) -> bool {
        matches!(
            self,
            Self::Class
                | Self::Struct
                | Self::Enum
                | Self::Interface
                | Self::Trait
                | Self::Impl
                | Self::Module
        )
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Method => "method",
            Self::Constructor => "constructor",
            Self::Class => "class",
            Self::Struct => "struct",
            Self::Enum => "enum",
            Self::Interface => "interface",
            Self::Trait => "trait",
            Self::Type => "type",
            Self::Module => "module",
            Self::Macro => "macro",
            Self::Constant => "constant",
            Self::Variable => "variable",
            Self::Field => "field",
            Self::Impl => "impl",
        }
    }
}

/// One definition in a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolDef {
    /// Identifier.
    pub name: String,
    /// Kind.
    pub kind: SymbolKind,
    /// Index of the enclosing definition in the same file.
    pub parent: Option<u32>,
    /// First line (1-based).
    pub start_line: u32,
    /// Last line (1-based, inclusive).
    pub end_line: u32,
    /// Declaration header, whitespace-collapsed.
    pub signature: String,
    /// Doc comment or docstring, markers stripped.
    pub doc: String,
}

/// An import statement's target as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRef {
    /// Module path, crate path or file specifier.
    pub target: String,
    /// Line (1-based).
    pub line: u32,
}

/// Uses of one identifier from one enclosing definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefSite {
    /// Identifier used.
    pub name: String,
    /// Enclosing definition index, if any.
    pub in_symbol: Option<u32>,
    /// Number of uses.
    pub count: u32,
    /// First few lines (1-based).
    pub lines: Vec<u32>,
}

/// Everything the map needs from one file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileAnalysis {
    /// Number of lines.
    pub lines: u32,
    /// Definitions in document order.
    pub symbols: Vec<SymbolDef>,
    /// Imports in document order.
    pub imports: Vec<ImportRef>,
    /// Referenced identifiers (kept in the caches; emptied in a built map,
    /// which holds them with interned names).
    pub refs: Vec<RefSite>,
    /// Content terms with frequencies, in an order fixed by the content (kept in
    /// the caches; emptied in a built map, where they live as interned ids).
    pub terms: Vec<(String, u32)>,
    /// Whether tree-sitter reported syntax errors.
    pub has_errors: bool,
}

thread_local! {
    static PARSER: RefCell<Parser> = RefCell::new(Parser::new());
}

/// Analyses already-redacted content.
pub fn analyse(content: &str, lang: Language) -> FileAnalysis {
    let (mut out, refs) = analyse_lean(content, lang);
    out.refs = refs.iter().map(RefDraft::owned).collect();
    out.terms = content_terms(content);
    out
}

/// [`analyse`] without the content terms (`terms` left empty) and with the
/// references borrowing the content (`refs` left empty), for a map that
/// interns both straight away when no store keeps the analysis
/// ([`with_content_terms`], [`crate::codemap::NameIds::with_refs`]): no
/// string or vector is allocated per reference or term.
pub(crate) fn analyse_lean(content: &str, lang: Language) -> (FileAnalysis, Vec<RefDraft<'_>>) {
    let mut out = FileAnalysis {
        lines: u32::try_from(content.lines().count()).unwrap_or(u32::MAX),
        ..FileAnalysis::default()
    };
    let (Some(grammar), Some(query)) = (lang.grammar(), lang.query()) else {
        return (out, Vec::new());
    };
    let tree = PARSER.with(|p| {
        let mut p = p.borrow_mut();
        p.set_language(&grammar).ok()?;
        p.parse(content, None)
    });
    let Some(tree) = tree else {
        return (out, Vec::new());
    };
    let root = tree.root_node();
    out.has_errors = root.has_error();
    let src = content.as_bytes();

    let names = query.capture_names();
    let mut defs: Vec<(usize, Node<'_>, Node<'_>, SymbolKind)> = Vec::new(); // pattern, def, name, kind
    let mut cursor = QueryCursor::new();
    // Definitions and imports sit near the top of the tree; not starting matches
    // inside function bodies skips most nodes (the query otherwise costs about as
    // much as the parse itself). A container that deep (a C# class nested in a
    // class in a namespace block, a Ruby class in two modules) has its members
    // past that depth: the query runs again from it, and so on down.
    cursor.set_max_start_depth(Some(MAX_QUERY_START_DEPTH));
    let mut starts = vec![root];
    while let Some(start) = starts.pop() {
        let mut matches = cursor.matches(query, start, src);
        while let Some(m) = matches.next() {
            let mut def = None;
            let mut name = None;
            let mut kind = None;
            for c in m.captures {
                let cap = names[c.index as usize];
                if cap == "name" {
                    name = Some(c.node);
                } else if cap == "import" && start.id() == root.id() {
                    // Imports sit at the top: the first run finds them all.
                    let target = import_text(text(c.node, src), lang);
                    if !target.is_empty() {
                        out.imports.push(ImportRef {
                            target,
                            line: line_of(c.node),
                        });
                    }
                } else if let Some(k) = cap.strip_prefix("definition.") {
                    def = Some(c.node);
                    kind = SymbolKind::from_capture(k);
                }
            }
            if let (Some(d), Some(n), Some(k)) = (def, name, kind) {
                // Members sit two or three levels below their container (a
                // body, then a decorator or attribute wrapper).
                if k.is_container()
                    && d.id() != start.id()
                    && depth_below(d, start) + 3 > MAX_QUERY_START_DEPTH
                {
                    starts.push(d);
                }
                defs.push((m.pattern_index, d, n, k));
            }
        }
    }
    // Several patterns can match one node (Go type specs): keep the most specific.
    defs.sort_by_key(|(p, d, n, _)| {
        (
            d.start_byte(),
            std::cmp::Reverse(d.end_byte()),
            n.start_byte(),
            *p,
        )
    });
    defs.dedup_by_key(|(_, d, n, _)| (d.id(), n.start_byte()));
    out.imports.dedup_by(|a, b| a.target == b.target);

    let lines: Vec<&str> = content.lines().collect();
    let mut name_starts = Vec::with_capacity(defs.len());
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(defs.len());
    for &(_, def, name_node, mut kind) in &defs {
        // `template <typename T> T clamp(...)`: the template header is part of
        // the definition (its signature, the doc comment above it).
        let def = match def.parent() {
            Some(p) if p.kind() == "template_declaration" && lang == Language::Cpp => p,
            _ => def,
        };
        let idx = out.symbols.len();
        let parent = innermost_container(&ranges, &out.symbols, def.start_byte(), def.end_byte());
        // A function in a class is a method; in a namespace (C++, TypeScript,
        // a Rust `mod`) it stays a function, but a Ruby module's `def` is a
        // (mixin) method.
        let in_type = |p: usize| {
            let k = out.symbols[p].kind;
            k.is_container() && (k != SymbolKind::Module || lang == Language::Ruby)
        };
        if kind == SymbolKind::Function && parent.is_some_and(in_type) {
            kind = SymbolKind::Method;
        }
        let name = if kind == SymbolKind::Impl {
            impl_name(text(name_node, src))
        } else {
            text(name_node, src).to_owned()
        };
        out.symbols.push(SymbolDef {
            name,
            kind,
            parent: parent.and_then(|p| u32::try_from(p).ok()),
            start_line: line_of(def),
            end_line: u32::try_from(def.end_position().row + 1).unwrap_or(u32::MAX),
            signature: signature(def, src, lang),
            doc: doc_comment(def, &lines, lang, src),
        });
        ranges.push((def.start_byte(), def.end_byte()));
        name_starts.push(name_node.start_byte());
        debug_assert_eq!(idx + 1, out.symbols.len());
    }
    name_starts.sort_unstable();
    let refs = collect_refs(root, content, &ranges, &name_starts, identifier_kinds(lang));
    (out, refs)
}

/// How many levels `node` sits below `ancestor` (which must be one of its
/// ancestors or itself).
fn depth_below(node: Node<'_>, ancestor: Node<'_>) -> u32 {
    let mut depth = 0;
    let mut at = node;
    while at.id() != ancestor.id() {
        let Some(parent) = at.parent() else { break };
        at = parent;
        depth += 1;
    }
    depth
}

/// A reference site as the map reads it: a [`RefSite`], or a [`RefDraft`].
pub(crate) trait RefLike {
    fn name(&self) -> &str;
    fn in_symbol(&self) -> Option<u32>;
    fn count(&self) -> u32;
    fn lines(&self) -> &[u32];
}

impl RefLike for RefSite {
    fn name(&self) -> &str {
        &self.name
    }
    fn in_symbol(&self) -> Option<u32> {
        self.in_symbol
    }
    fn count(&self) -> u32 {
        self.count
    }
    fn lines(&self) -> &[u32] {
        &self.lines
    }
}

/// A [`RefSite`] borrowing its name from the content, its lines inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefDraft<'a> {
    name: &'a str,
    in_symbol: Option<u32>,
    count: u32,
    lines: [u32; MAX_REF_LINES],
    kept: usize,
}

impl RefDraft<'_> {
    fn owned(&self) -> RefSite {
        RefSite {
            name: self.name.to_owned(),
            in_symbol: self.in_symbol,
            count: self.count,
            lines: self.lines().to_vec(),
        }
    }
}

impl RefLike for RefDraft<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn in_symbol(&self) -> Option<u32> {
        self.in_symbol
    }
    fn count(&self) -> u32 {
        self.count
    }
    fn lines(&self) -> &[u32] {
        &self.lines[..self.kept]
    }
}

fn innermost_container(
    ranges: &[(usize, usize)],
    syms: &[SymbolDef],
    start: usize,
    end: usize,
) -> Option<usize> {
    ranges
        .iter()
        .enumerate()
        .rev()
        .find(|(i, (s, e))| *s <= start && end <= *e && syms[*i].kind.is_container())
        .map(|(i, _)| i)
}

fn text<'a>(node: Node<'_>, src: &'a [u8]) -> &'a str {
    std::str::from_utf8(&src[node.byte_range()]).unwrap_or("")
}

fn line_of(node: Node<'_>) -> u32 {
    u32::try_from(node.start_position().row + 1).unwrap_or(u32::MAX)
}

/// `Foo<T>` and `crate::x::Foo` name the impl after `Foo`.
fn impl_name(t: &str) -> String {
    let base = t.split('<').next().unwrap_or(t);
    base.rsplit("::").next().unwrap_or(base).trim().to_owned()
}

fn import_text(raw: &str, lang: Language) -> String {
    let t = raw
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == '`');
    match lang {
        Language::Rust => t
            .split('{')
            .next()
            .unwrap_or(t)
            .trim_end_matches("::")
            .to_owned(),
        _ => t.to_owned(),
    }
}

/// The declaration header: from the definition's start to its body.
fn signature(def: Node<'_>, src: &[u8], lang: Language) -> String {
    let body = match def.kind() {
        // The templated definition's body.
        "template_declaration" => {
            let mut c = def.walk();
            def.named_children(&mut c)
                .find_map(|n| n.child_by_field_name("body"))
        }
        _ => def
            .child_by_field_name("body")
            .or_else(|| {
                // A function value's body, or a C# indexer's or property's
                // `=> …` (`this[int i] => …`).
                let value = def.child_by_field_name("value")?;
                value
                    .child_by_field_name("body")
                    .or((value.kind() == "arrow_expression_clause").then_some(value))
            })
            // C# properties and indexers: `{ get; set; }`.
            .or_else(|| def.child_by_field_name("accessors")),
    };
    let end = match body {
        Some(b) if b.start_byte() > def.start_byte() => b.start_byte(),
        _ => {
            // No body: the first line (a Ruby `def a(x); end` up to its `;`).
            let s = &src[def.start_byte()..def.end_byte()];
            let stop = |b: &u8| *b == b'\n' || (lang == Language::Ruby && *b == b';');
            def.start_byte() + s.iter().position(stop).unwrap_or(s.len())
        }
    };
    // Ruby: a comment between the header and the body (`module Billing` then
    // `# An invoice.`) is not part of the header; the header ends with its
    // line (or a `;`) after the name, superclass and parameters.
    let end = if lang == Language::Ruby {
        let head = ["name", "superclass", "parameters"]
            .iter()
            .filter_map(|f| def.child_by_field_name(f))
            .map(|n| n.end_byte())
            .max()
            .unwrap_or(def.start_byte())
            .clamp(def.start_byte(), end);
        let rest = &src[head..end];
        head + rest
            .iter()
            .position(|b| *b == b'\n' || *b == b';')
            .unwrap_or(rest.len())
    } else {
        end
    };
    let raw = String::from_utf8_lossy(&src[def.start_byte()..end]);
    let mut sig = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if sig.len() > MAX_SIGNATURE_CHARS {
        let cut = (0..=MAX_SIGNATURE_CHARS)
            .rev()
            .find(|i| sig.is_char_boundary(*i))
            .unwrap_or(0);
        sig.truncate(cut);
        sig.push('…');
    }
    let trailing: &[char] = match lang {
        // A prototype's `;`; an endless Ruby method's `=`.
        Language::C | Language::Cpp | Language::CSharp | Language::Php => &['{', ':', ' ', ';'],
        Language::Ruby => &['{', ':', ' ', ';', '='],
        _ => &['{', ':', ' '],
    };
    sig.trim_end_matches(trailing).to_owned()
}

/// Comment lines right above the definition (skipping attributes/decorators), or a
/// Python docstring.
fn doc_comment(def: Node<'_>, lines: &[&str], lang: Language, src: &[u8]) -> String {
    if lang == Language::Python {
        if let Some(doc) = python_docstring(def, src) {
            return doc;
        }
    }
    // In C, C++ and C# a `#` line is a preprocessor directive, not a comment.
    let hash_comments = !matches!(lang, Language::C | Language::Cpp | Language::CSharp);
    let mut row = def.start_position().row;
    let mut doc = Vec::new();
    while row > 0 && doc.len() < MAX_DOC_LINES {
        row -= 1;
        let l = lines.get(row).map_or("", |l| l.trim());
        if l.starts_with("#[") || (l.starts_with('@') && lang != Language::Python) {
            continue;
        }
        let stripped = ["///", "//!", "//", "/**", "*/", "/*", "*", "#"]
            .iter()
            .filter(|m| hash_comments || **m != "#")
            .find_map(|m| l.strip_prefix(m));
        match stripped {
            Some(s) if !l.starts_with("#[") => doc.push(s.trim_end_matches("*/").trim()),
            _ => break,
        }
    }
    doc.reverse();
    doc.retain(|l| !l.is_empty());
    doc.join("\n")
}

fn python_docstring(def: Node<'_>, src: &[u8]) -> Option<String> {
    let body = def.child_by_field_name("body")?;
    let first = body.named_child(0)?;
    if first.kind() != "expression_statement" {
        return None;
    }
    let s = first.named_child(0)?;
    if s.kind() != "string" {
        return None;
    }
    let t = text(s, src).trim_matches(|c| c == '"' || c == '\'').trim();
    Some(
        t.lines()
            .take(MAX_DOC_LINES)
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Per node kind id of a language: is it an identifier? (Several ids can share a
/// name through aliases, so the table is built from every id.)
fn identifier_kinds(lang: Language) -> &'static [bool] {
    static TABLES: std::sync::LazyLock<Vec<(Language, Vec<bool>)>> =
        std::sync::LazyLock::new(|| {
            crate::lang::ALL
                .iter()
                .filter_map(|l| {
                    let g = l.grammar()?;
                    let n = g.node_kind_count();
                    let table = (0..n)
                        .map(|id| {
                            u16::try_from(id)
                                .ok()
                                .and_then(|id| g.node_kind_for_id(id))
                                .is_some_and(|k| {
                                    IDENT_KINDS.contains(&k)
                                        || (*l == Language::Php && k == PHP_IDENT_KIND)
                                })
                        })
                        .collect();
                    Some((*l, table))
                })
                .collect()
        });
    TABLES
        .iter()
        .find(|(l, _)| *l == lang)
        .map_or(&[], |(_, t)| t.as_slice())
}

/// PHP's identifiers are `name` nodes (in calls, member accesses,
/// variables); no other grammar has that kind.
const PHP_IDENT_KIND: &str = "name";

const IDENT_KINDS: &[&str] = &[
    "identifier",
    "type_identifier",
    "field_identifier",
    "property_identifier",
    "shorthand_property_identifier",
    "constant",
];

/// Receivers and dunder noise that say nothing about which definition is used.
fn is_ignored_name(name: &str) -> bool {
    // A match compiles to a switch on the length; `[..].contains` compared each.
    matches!(
        name,
        "self" | "Self" | "this" | "super" | "cls" | "_" | "__init__"
    )
}

/// Identifier uses grouped by (name, enclosing definition), in document order.
fn collect_refs<'a>(
    root: Node<'_>,
    src: &'a str,
    ranges: &[(usize, usize)],
    name_starts: &[usize],
    ident: &[bool],
) -> Vec<RefDraft<'a>> {
    let mut by_key: HashMap<(&'a str, Option<u32>), usize> = HashMap::default();
    let mut out: Vec<RefDraft<'a>> = Vec::new();
    let mut cursor = root.walk();
    let mut stack: Vec<usize> = Vec::new(); // indices into ranges, innermost last
    let mut next_def = 0usize;
    loop {
        let node = cursor.node();
        if ident
            .get(usize::from(node.kind_id()))
            .copied()
            .unwrap_or(false)
            && node.child_count() == 0
        {
            let start = node.start_byte();
            if name_starts.binary_search(&start).is_err() {
                while next_def < ranges.len() && ranges[next_def].0 <= start {
                    stack.push(next_def);
                    next_def += 1;
                }
                while stack.last().is_some_and(|d| ranges[*d].1 <= start) {
                    stack.pop();
                }
                // A popped-over inner range may leave an outer one that ended too.
                stack.retain(|d| ranges[*d].1 > start);
                // Slicing the validated text: identifiers start and end on char
                // boundaries, and `get` keeps a surprise from panicking.
                let name = src.get(node.byte_range()).unwrap_or("");
                if name.len() > 1 && !is_ignored_name(name) {
                    let in_symbol = stack.last().and_then(|d| u32::try_from(*d).ok());
                    let line = line_of(node);
                    let i = *by_key.entry((name, in_symbol)).or_insert_with(|| {
                        out.push(RefDraft {
                            name,
                            in_symbol,
                            count: 0,
                            lines: [0; MAX_REF_LINES],
                            kept: 0,
                        });
                        out.len() - 1
                    });
                    let site = &mut out[i];
                    site.count += 1;
                    let n = site.kept;
                    if n < MAX_REF_LINES && (n == 0 || site.lines[n - 1] != line) {
                        site.lines[n] = line;
                        site.kept += 1;
                    }
                }
            }
        }
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return out;
            }
        }
    }
}

thread_local! {
    static CONTENT_TERMS: RefCell<(Interned, Vec<u32>)> = RefCell::default();
}

/// Calls `f` with the terms [`content_terms`] finds and their counts, in
/// first-seen order, counted in a buffer each thread reuses: no string is
/// allocated per term (a file has thousands, and a map that keeps no
/// analysis only interns them).
pub(crate) fn with_content_terms<R>(
    content: &str,
    f: impl FnOnce(&mut dyn Iterator<Item = (&str, u32)>) -> R,
) -> R {
    CONTENT_TERMS.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (seen, counts) = &mut *guard;
        seen.clear();
        counts.clear();
        tokens::code_terms(content, |t| {
            let id = seen.intern(t) as usize;
            if id == counts.len() {
                counts.push(1);
            } else if let Some(c) = counts.get_mut(id) {
                *c += 1;
            }
        });
        let mut terms = (0u32..)
            .zip(counts.iter())
            .map(|(id, c)| (seen.string(id).unwrap_or(""), *c));
        f(&mut terms)
    })
}

fn content_terms(content: &str) -> Vec<(String, u32)> {
    // About one distinct term per 50 bytes of source: sized once instead of
    // rehashing through every doubling.
    let mut counts: HashMap<String, u32> =
        HashMap::with_capacity_and_hasher(content.len() / 64, Default::default());
    tokens::code_terms(content, |t| {
        if let Some(c) = counts.get_mut(t) {
            *c += 1;
        } else {
            counts.insert(t.to_owned(), 1);
        }
    });
    // Not sorted (~1 % of an analysis): the map's hasher is unseeded, so the
    // order is the same for the same content, and nothing looks terms up here.
    counts.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(a: &FileAnalysis) -> Vec<(&str, SymbolKind)> {
        a.symbols
            .iter()
            .map(|s| (s.name.as_str(), s.kind))
            .collect()
    }

    #[test]
    fn rust_definitions_signatures_and_docs() {
        let src = "use crate::net::Client;\n\n/// Retries a request.\n#[inline]\npub fn retry(n: u32) -> bool {\n    Client::new().send(n)\n}\n\nstruct S;\nimpl S {\n    fn go(&self) {}\n}\n";
        let a = analyse(src, Language::Rust);
        assert_eq!(
            names(&a),
            [
                ("retry", SymbolKind::Function),
                ("S", SymbolKind::Struct),
                ("S", SymbolKind::Impl),
                ("go", SymbolKind::Method)
            ]
        );
        assert_eq!(a.symbols[0].signature, "pub fn retry(n: u32) -> bool");
        assert_eq!(a.symbols[0].doc, "Retries a request.");
        assert_eq!(a.symbols[0].start_line, 5);
        assert_eq!(a.imports[0].target, "crate::net::Client");
        let send = a
            .refs
            .iter()
            .find(|r| r.name == "send")
            .map(|r| (r.in_symbol, r.lines.clone()));
        assert_eq!(send, Some((Some(0), vec![6])));
    }

    #[test]
    fn python_methods_docstrings_and_imports() {
        let src = "from .models import Response\nimport os.path\n\nclass Session:\n    def send(self, req):\n        \"\"\"Send it.\"\"\"\n        return Response(req)\n";
        let a = analyse(src, Language::Python);
        assert_eq!(
            names(&a),
            [("Session", SymbolKind::Class), ("send", SymbolKind::Method)]
        );
        assert_eq!(a.symbols[1].doc, "Send it.");
        assert_eq!(a.symbols[1].signature, "def send(self, req)");
        let imports: Vec<&str> = a.imports.iter().map(|i| i.target.as_str()).collect();
        assert_eq!(imports, [".models", "os.path"]);
        assert!(
            a.refs
                .iter()
                .any(|r| r.name == "Response" && r.in_symbol == Some(1))
        );
    }

    #[test]
    fn go_type_kinds_are_specific() {
        let src = "package x\n\nimport \"fmt\"\n\ntype Cmd struct{}\ntype Runner interface{ Run() }\n\nfunc (c *Cmd) Execute() error { return fmt.Errorf(\"x\") }\n";
        let a = analyse(src, Language::Go);
        assert_eq!(
            names(&a),
            [
                ("Cmd", SymbolKind::Struct),
                ("Runner", SymbolKind::Interface),
                ("Execute", SymbolKind::Method)
            ]
        );
        assert_eq!(a.imports[0].target, "fmt");
    }

    #[test]
    fn other_files_only_get_terms() {
        let a = analyse("Hello parseHeaders world", Language::Other);
        assert!(a.symbols.is_empty());
        assert!(a.terms.iter().any(|(t, _)| t == "parseheaders"));
    }

    #[test]
    fn content_terms_counted_in_place_are_the_kept_ones() {
        let text = "parseHeaders(x) parse_header; headers HEADERS x2 é parse";
        let mut kept = content_terms(text);
        kept.sort();
        for _ in 0..2 {
            let mut counted: Vec<(String, u32)> = with_content_terms(text, |terms| {
                terms.map(|(t, c)| (t.to_owned(), c)).collect()
            });
            counted.sort();
            assert_eq!(counted, kept);
        }
        assert!(with_content_terms("", |terms| terms.next().is_none()));
    }
}
