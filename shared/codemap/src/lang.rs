//! Languages with official tree-sitter grammars and their tags-style queries.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tree_sitter::Query;

/// A source language; `Other` files take part lexically only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Rust (`.rs`).
    Rust,
    /// Python (`.py`, `.pyi`).
    Python,
    /// TypeScript (`.ts`, `.mts`, `.cts`).
    TypeScript,
    /// TSX (`.tsx`).
    Tsx,
    /// JavaScript (`.js`, `.jsx`, `.mjs`, `.cjs`).
    JavaScript,
    /// Go (`.go`).
    Go,
    /// Java (`.java`).
    Java,
    /// C (`.c`, `.h`: a header is taken as C, the common case).
    C,
    /// C++ (`.cc`, `.cpp`, `.cxx`, `.hpp`, `.hh`, `.hxx`).
    Cpp,
    /// C# (`.cs`).
    CSharp,
    /// Ruby (`.rb`).
    Ruby,
    /// PHP (`.php`).
    Php,
    /// Any other text file.
    Other,
}

impl Language {
    /// Detects the language from a path's extension.
    pub fn from_path(path: &str) -> Self {
        Self::from_extension(path.rsplit_once('.').map_or("", |(_, e)| e))
    }

    /// The fleet's one extension table (an extension without its dot, as
    /// written: callers that ignore case lower-case it first).
    pub fn from_extension(ext: &str) -> Self {
        match ext {
            "rs" => Self::Rust,
            "py" | "pyi" => Self::Python,
            "ts" | "mts" | "cts" => Self::TypeScript,
            "tsx" => Self::Tsx,
            "js" | "jsx" | "mjs" | "cjs" => Self::JavaScript,
            "go" => Self::Go,
            "java" => Self::Java,
            "c" | "h" => Self::C,
            "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => Self::Cpp,
            "cs" => Self::CSharp,
            "rb" => Self::Ruby,
            "php" => Self::Php,
            _ => Self::Other,
        }
    }

    /// A parsed language from a hint such as `python`, `py`, `ts`, `golang`
    /// (case-insensitive), as a request or a code fence names it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "rust" | "rs" => Self::Rust,
            "python" | "py" | "python3" => Self::Python,
            "typescript" | "ts" => Self::TypeScript,
            "tsx" => Self::Tsx,
            "javascript" | "js" | "jsx" | "node" | "mjs" | "cjs" => Self::JavaScript,
            "go" | "golang" => Self::Go,
            "java" => Self::Java,
            "c" | "h" => Self::C,
            "cpp" | "c++" | "cxx" | "cc" | "hpp" => Self::Cpp,
            "csharp" | "c#" | "cs" => Self::CSharp,
            "ruby" | "rb" => Self::Ruby,
            "php" => Self::Php,
            _ => return None,
        })
    }

    /// Code-fence info strings that name this language (none for `Other`).
    pub fn fence_tags(self) -> &'static [&'static str] {
        match self {
            Self::Rust => &["rust", "rs"],
            Self::Python => &["python", "py", "python3"],
            Self::TypeScript => &["typescript", "ts"],
            Self::Tsx => &["tsx", "typescript", "ts", "jsx"],
            Self::JavaScript => &["javascript", "js", "jsx", "mjs"],
            Self::Go => &["go", "golang"],
            Self::Java => &["java"],
            Self::C => &["c", "h"],
            Self::Cpp => &["cpp", "c++", "cxx", "cc", "hpp"],
            Self::CSharp => &["csharp", "c#", "cs"],
            Self::Ruby => &["ruby", "rb"],
            Self::Php => &["php"],
            Self::Other => &[],
        }
    }

    /// Display name used in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::TypeScript => "typescript",
            Self::Tsx => "tsx",
            Self::JavaScript => "javascript",
            Self::Go => "go",
            Self::Java => "java",
            Self::C => "c",
            Self::Cpp => "cpp",
            Self::CSharp => "csharp",
            Self::Ruby => "ruby",
            Self::Php => "php",
            Self::Other => "other",
        }
    }

    /// Whether the language is parsed with tree-sitter.
    pub fn is_parsed(self) -> bool {
        self != Self::Other
    }

    /// The tree-sitter grammar.
    pub fn grammar(self) -> Option<tree_sitter::Language> {
        Some(match self {
            Self::Rust => tree_sitter_rust::LANGUAGE.into(),
            Self::Python => tree_sitter_python::LANGUAGE.into(),
            Self::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Self::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Self::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Self::Go => tree_sitter_go::LANGUAGE.into(),
            Self::Java => tree_sitter_java::LANGUAGE.into(),
            Self::C => tree_sitter_c::LANGUAGE.into(),
            Self::Cpp => tree_sitter_cpp::LANGUAGE.into(),
            Self::CSharp => tree_sitter_c_sharp::LANGUAGE.into(),
            Self::Ruby => tree_sitter_ruby::LANGUAGE.into(),
            // The grammar with `<?php` tags and inline HTML, as `.php` files are.
            Self::Php => tree_sitter_php::LANGUAGE_PHP.into(),
            Self::Other => return None,
        })
    }

    /// The compiled definitions+imports query, compiled on first use of each
    /// language only: compiling all twelve took ~170 ms of every cold
    /// process's first query, most of it for grammars the tree doesn't use.
    pub fn query(self) -> Option<&'static Query> {
        static QUERIES: [OnceLock<Option<Query>>; ALL.len()] =
            [const { OnceLock::new() }; ALL.len()];
        let idx = ALL.iter().position(|l| *l == self)?;
        QUERIES[idx]
            .get_or_init(|| {
                let src = query_source(self);
                self.grammar().and_then(|g| match Query::new(&g, &src) {
                    Ok(q) => Some(q),
                    Err(e) => {
                        tracing::error!(lang = self.name(), error = %e, "tags query does not compile");
                        None
                    }
                })
            })
            .as_ref()
    }
}

/// Every parsed language.
pub const ALL: [Language; 12] = [
    Language::Rust,
    Language::Python,
    Language::TypeScript,
    Language::Tsx,
    Language::JavaScript,
    Language::Go,
    Language::Java,
    Language::C,
    Language::Cpp,
    Language::CSharp,
    Language::Ruby,
    Language::Php,
];

// Captures: @name + @definition.<kind> for definitions, @import for import paths.
const RUST: &str = r#"
(struct_item name: (type_identifier) @name) @definition.struct
(enum_item name: (type_identifier) @name) @definition.enum
(union_item name: (type_identifier) @name) @definition.struct
(type_item name: (type_identifier) @name) @definition.type
(function_item name: (identifier) @name) @definition.function
(function_signature_item name: (identifier) @name) @definition.function
(trait_item name: (type_identifier) @name) @definition.trait
(mod_item name: (identifier) @name) @definition.module
(macro_definition name: (identifier) @name) @definition.macro
(const_item name: (identifier) @name) @definition.constant
(static_item name: (identifier) @name) @definition.constant
(impl_item type: (_) @name) @definition.impl
(use_declaration argument: (_) @import)
(mod_item name: (identifier) @import !body)
"#;

const PYTHON: &str = r#"
(class_definition name: (identifier) @name) @definition.class
(function_definition name: (identifier) @name) @definition.function
(module (expression_statement (assignment left: (identifier) @name) @definition.constant))
(import_statement name: (dotted_name) @import)
(import_statement name: (aliased_import name: (dotted_name) @import))
(import_from_statement module_name: (_) @import)
"#;

const JS_COMMON: &str = r#"
(function_declaration name: (identifier) @name) @definition.function
(generator_function_declaration name: (identifier) @name) @definition.function
(method_definition name: (property_identifier) @name) @definition.method
(variable_declarator name: (identifier) @name value: [(arrow_function) (function_expression)]) @definition.function
(program (lexical_declaration (variable_declarator name: (identifier) @name) @definition.constant))
(program (export_statement (lexical_declaration (variable_declarator name: (identifier) @name) @definition.constant)))
(import_statement source: (string (string_fragment) @import))
(export_statement source: (string (string_fragment) @import))
(call_expression function: (identifier) @_req arguments: (arguments (string (string_fragment) @import)) (#eq? @_req "require"))
"#;

const JS_ONLY: &str = r#"
(class_declaration name: (identifier) @name) @definition.class
"#;

const TS_ONLY: &str = r#"
(class_declaration name: (type_identifier) @name) @definition.class
(abstract_class_declaration name: (type_identifier) @name) @definition.class
(interface_declaration name: (type_identifier) @name) @definition.interface
(type_alias_declaration name: (type_identifier) @name) @definition.type
(enum_declaration name: (identifier) @name) @definition.enum
(function_signature name: (identifier) @name) @definition.function
(method_signature name: (property_identifier) @name) @definition.method
(abstract_method_signature name: (property_identifier) @name) @definition.method
(internal_module name: (identifier) @name) @definition.module
"#;

const GO: &str = r#"
(function_declaration name: (identifier) @name) @definition.function
(method_declaration name: (field_identifier) @name) @definition.method
(type_spec name: (type_identifier) @name type: (struct_type)) @definition.struct
(type_spec name: (type_identifier) @name type: (interface_type)) @definition.interface
(type_spec name: (type_identifier) @name) @definition.type
(source_file (const_declaration (const_spec name: (identifier) @name) @definition.constant))
(source_file (var_declaration (var_spec name: (identifier) @name) @definition.variable))
(import_spec path: (interpreted_string_literal) @import)
"#;

const JAVA: &str = r#"
(class_declaration name: (identifier) @name) @definition.class
(interface_declaration name: (identifier) @name) @definition.interface
(enum_declaration name: (identifier) @name) @definition.enum
(record_declaration name: (identifier) @name) @definition.class
(annotation_type_declaration name: (identifier) @name) @definition.interface
(method_declaration name: (identifier) @name) @definition.method
(constructor_declaration name: (identifier) @name) @definition.constructor
(field_declaration declarator: (variable_declarator name: (identifier) @name)) @definition.field
(import_declaration (scoped_identifier) @import)
"#;

// C and C++ share declarators: a definition is the whole `function_definition` (so the
// signature stops at the body); prototypes in headers are definitions too. A
// `#define` without a value (an include guard) is not a definition.
const C_COMMON: &str = r#"
(function_definition declarator: (function_declarator declarator: (identifier) @name)) @definition.function
(function_definition declarator: (pointer_declarator declarator: (function_declarator declarator: (identifier) @name))) @definition.function
(declaration declarator: (function_declarator declarator: (identifier) @name)) @definition.function
(declaration declarator: (pointer_declarator declarator: (function_declarator declarator: (identifier) @name))) @definition.function
(struct_specifier name: (type_identifier) @name body: (_)) @definition.struct
(union_specifier name: (type_identifier) @name body: (_)) @definition.struct
(enum_specifier name: (type_identifier) @name body: (_)) @definition.enum
(type_definition declarator: (type_identifier) @name) @definition.type
(preproc_def name: (identifier) @name value: (_)) @definition.macro
(preproc_function_def name: (identifier) @name) @definition.macro
(preproc_include path: (string_literal) @import)
(preproc_include path: (system_lib_string) @import)
"#;

const CPP_ONLY: &str = r#"
(class_specifier name: (type_identifier) @name body: (_)) @definition.class
(namespace_definition name: (_) @name) @definition.module
(alias_declaration name: (type_identifier) @name) @definition.type
(function_definition declarator: (function_declarator declarator: [(field_identifier) (destructor_name) (operator_name)] @name)) @definition.method
(function_definition declarator: (function_declarator declarator: (qualified_identifier name: [(identifier) (destructor_name) (operator_name)] @name))) @definition.method
(function_definition declarator: (reference_declarator (function_declarator declarator: [(identifier) (field_identifier) (operator_name)] @name))) @definition.function
(function_definition declarator: (reference_declarator (function_declarator declarator: (qualified_identifier name: [(identifier) (operator_name)] @name)))) @definition.method
(function_definition declarator: (pointer_declarator (function_declarator declarator: (qualified_identifier name: (identifier) @name)))) @definition.method
(field_declaration declarator: (function_declarator declarator: [(field_identifier) (operator_name)] @name)) @definition.method
(field_declaration declarator: (reference_declarator (function_declarator declarator: [(field_identifier) (operator_name)] @name))) @definition.method
(field_declaration_list (declaration declarator: (function_declarator declarator: [(destructor_name) (operator_name)] @name)) @definition.method)
"#;

const CSHARP: &str = r#"
(class_declaration name: (identifier) @name) @definition.class
(struct_declaration name: (identifier) @name) @definition.struct
(record_declaration name: (identifier) @name) @definition.class
(interface_declaration name: (identifier) @name) @definition.interface
(enum_declaration name: (identifier) @name) @definition.enum
(namespace_declaration name: (_) @name) @definition.module
(file_scoped_namespace_declaration name: (_) @name) @definition.module
(method_declaration name: (identifier) @name) @definition.method
(constructor_declaration name: (identifier) @name) @definition.constructor
(property_declaration name: (identifier) @name) @definition.field
(field_declaration (variable_declaration (variable_declarator name: (identifier) @name))) @definition.field
(event_field_declaration (variable_declaration (variable_declarator name: (identifier) @name))) @definition.field
(event_declaration name: (identifier) @name) @definition.field
(delegate_declaration name: (identifier) @name) @definition.type
(destructor_declaration name: (identifier) @name) @definition.method
(operator_declaration operator: _ @name) @definition.method
(conversion_operator_declaration "operator" @name) @definition.method
(indexer_declaration "this" @name) @definition.method
(using_directive !name (_) @import)
"#;

const RUBY: &str = r#"
(class name: [(constant) (scope_resolution name: (_))] @name) @definition.class
(module name: [(constant) (scope_resolution name: (_))] @name) @definition.module
(method name: (_) @name) @definition.function
(singleton_method name: (_) @name) @definition.method
(program (assignment left: (constant) @name) @definition.constant)
(call method: (identifier) @_req arguments: (argument_list . (string (string_content) @import)) (#match? @_req "^(require|require_relative|load)$"))
"#;

const PHP: &str = r#"
(namespace_definition name: (namespace_name) @name) @definition.module
(class_declaration name: (name) @name) @definition.class
(interface_declaration name: (name) @name) @definition.interface
(trait_declaration name: (name) @name) @definition.trait
(enum_declaration name: (name) @name) @definition.enum
(function_definition name: (name) @name) @definition.function
(method_declaration name: (name) @name) @definition.method
(property_declaration (property_element (variable_name (name) @name))) @definition.field
(namespace_use_clause . [(qualified_name) (name)] @import)
(include_expression (string (string_content) @import))
(include_once_expression (string (string_content) @import))
(require_expression (string (string_content) @import))
(require_once_expression (string (string_content) @import))
(include_expression (binary_expression right: (string (string_content) @import)))
(include_once_expression (binary_expression right: (string (string_content) @import)))
(require_expression (binary_expression right: (string (string_content) @import)))
(require_once_expression (binary_expression right: (string (string_content) @import)))
"#;

fn query_source(lang: Language) -> String {
    match lang {
        Language::Rust => RUST.to_owned(),
        Language::Python => PYTHON.to_owned(),
        Language::JavaScript => format!("{JS_COMMON}{JS_ONLY}"),
        Language::TypeScript | Language::Tsx => format!("{JS_COMMON}{TS_ONLY}"),
        Language::Go => GO.to_owned(),
        Language::Java => JAVA.to_owned(),
        Language::C => C_COMMON.to_owned(),
        Language::Cpp => format!("{C_COMMON}{CPP_ONLY}"),
        Language::CSharp => CSHARP.to_owned(),
        Language::Ruby => RUBY.to_owned(),
        Language::Php => PHP.to_owned(),
        Language::Other => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_query_compiles() {
        for l in ALL {
            assert!(l.query().is_some(), "query for {} must compile", l.name());
        }
    }

    #[test]
    fn extensions_map_to_languages() {
        assert_eq!(Language::from_path("a/b.rs"), Language::Rust);
        assert_eq!(Language::from_path("x.tsx"), Language::Tsx);
        assert_eq!(Language::from_path("README.md"), Language::Other);
        assert_eq!(Language::from_extension("pyi"), Language::Python);
        assert_eq!(Language::from_path("lib/list.h"), Language::C);
        assert_eq!(Language::from_path("src/a.c"), Language::C);
        for ext in ["cc", "cpp", "cxx", "hpp", "hh", "hxx"] {
            assert_eq!(Language::from_extension(ext), Language::Cpp, "{ext}");
        }
        assert_eq!(Language::from_path("App/Program.cs"), Language::CSharp);
        assert_eq!(Language::from_path("lib/cart.rb"), Language::Ruby);
        assert_eq!(Language::from_path("public/index.php"), Language::Php);
    }

    #[test]
    fn hints_name_parsed_languages_and_their_fences() {
        assert_eq!(Language::from_name(" Golang "), Some(Language::Go));
        assert_eq!(Language::from_name("node"), Some(Language::JavaScript));
        assert_eq!(Language::from_name("other"), None);
        assert_eq!(Language::from_name("C++"), Some(Language::Cpp));
        assert_eq!(Language::from_name("c#"), Some(Language::CSharp));
        assert_eq!(Language::from_name("cs"), Some(Language::CSharp));
        assert_eq!(Language::from_name("rb"), Some(Language::Ruby));
        assert_eq!(Language::from_name("h"), Some(Language::C));
        for l in [
            Language::C,
            Language::Cpp,
            Language::CSharp,
            Language::Ruby,
            Language::Php,
        ] {
            let json = serde_json::to_string(&l).expect("serialise");
            assert_eq!(json, format!("\"{}\"", l.name()));
        }
        for l in ALL {
            assert_eq!(Language::from_name(l.name()), Some(l));
            assert!(l.fence_tags().contains(&l.name()), "{}", l.name());
        }
        assert!(Language::Other.fence_tags().is_empty());
    }
}
