//! Each language: definitions, cross-file references and imports.

use contexten_codemap::{CodeMap, SymbolKind};

use crate::helpers::{analyse, write_repo};

fn defs(map: &CodeMap, path: &str) -> Vec<(String, SymbolKind)> {
    let s = map.file_summary(path).expect("file in map");
    s.symbols.into_iter().map(|s| (s.name, s.kind)).collect()
}

fn usage_paths(map: &CodeMap, symbol: &str) -> Vec<String> {
    let s = map.symbol_summary(symbol).expect("symbol found");
    let mut v: Vec<String> = s
        .usages
        .into_iter()
        .map(|u| format!("{}:{}", u.path, u.line))
        .collect();
    v.dedup();
    v
}

#[test]
fn rust_crate_links_modules_uses_and_calls() {
    let dir = write_repo(&[
        ("Cargo.toml", "[package]\nname = \"demo\"\n"),
        ("src/lib.rs", "pub mod config;\npub mod server;\n"),
        (
            "src/config.rs",
            "/// Server settings.\npub struct Config {\n    pub port: u16,\n}\n\nimpl Config {\n    /// Reads settings from the environment.\n    pub fn from_env() -> Config {\n        Config { port: 8080 }\n    }\n}\n",
        ),
        (
            "src/server.rs",
            "use crate::config::Config;\n\npub fn start() -> u16 {\n    let cfg = Config::from_env();\n    cfg.port\n}\n",
        ),
        (
            "src/main.rs",
            "fn main() {\n    demo::server::start();\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(
        defs(&map, "src/config.rs"),
        [
            ("Config".into(), SymbolKind::Struct),
            ("Config".into(), SymbolKind::Impl),
            ("from_env".into(), SymbolKind::Method)
        ]
    );
    let server = map.file_summary("src/server.rs").expect("server");
    assert_eq!(server.imports, ["crate::config::Config"]);
    assert_eq!(server.imports_files, ["src/config.rs"]);
    assert!(
        map.file_summary("src/config.rs")
            .expect("config")
            .imported_by
            .contains(&"src/server.rs".to_owned())
    );
    assert_eq!(
        map.file_summary("src/lib.rs").expect("lib").imports_files,
        ["src/config.rs", "src/server.rs"]
    );
    assert_eq!(usage_paths(&map, "from_env"), ["src/server.rs:4"]);
    let start = map.symbol_summary("start").expect("start");
    assert!(
        start
            .dependencies
            .iter()
            .any(|d| d.name == "from_env" && d.path == "src/config.rs")
    );
    assert_eq!(start.definitions[0].signature, "pub fn start() -> u16");
    let from_env = map
        .symbol_summary("Config::from_env")
        .expect("qualified lookup");
    assert_eq!(
        from_env.definitions[0].doc,
        "Reads settings from the environment."
    );
    assert!(
        map.summary()
            .entry_points
            .contains(&"src/main.rs".to_owned())
    );
}

#[test]
fn python_package_resolves_relative_and_absolute_imports() {
    let dir = write_repo(&[
        ("shop/__init__.py", ""),
        (
            "shop/models.py",
            "class Order:\n    \"\"\"A customer order.\"\"\"\n\n    def total(self):\n        return sum(i.price for i in self.items)\n",
        ),
        (
            "shop/billing.py",
            "from .models import Order\n\n\ndef invoice(order: Order) -> str:\n    return f\"{order.total()}\"\n",
        ),
        (
            "app.py",
            "import shop.billing\n\nif __name__ == \"__main__\":\n    shop.billing.invoice(None)\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(
        defs(&map, "shop/models.py"),
        [
            ("Order".into(), SymbolKind::Class),
            ("total".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(
        map.file_summary("shop/billing.py")
            .expect("billing")
            .imports_files,
        ["shop/models.py"]
    );
    assert_eq!(
        map.file_summary("app.py").expect("app").imports_files,
        ["shop/billing.py"]
    );
    assert_eq!(usage_paths(&map, "total"), ["shop/billing.py:5"]);
    assert_eq!(
        map.symbol_summary("Order").expect("order").definitions[0].doc,
        "A customer order."
    );
    assert!(map.summary().entry_points.contains(&"app.py".to_owned()));
}

#[test]
fn typescript_and_tsx_resolve_relative_imports() {
    let dir = write_repo(&[
        (
            "src/api/client.ts",
            "export interface Options { retries: number }\n\nexport class HttpClient {\n  constructor(private opts: Options) {}\n  async get(url: string): Promise<Response> {\n    return fetch(url);\n  }\n}\n",
        ),
        (
            "src/hooks/useUser.ts",
            "import { HttpClient } from '../api/client';\n\nexport function useUser(id: string) {\n  const c = new HttpClient({ retries: 2 });\n  return c.get(`/users/${id}`);\n}\n",
        ),
        (
            "src/components/Profile.tsx",
            "import { useUser } from '../hooks/useUser';\n\nexport const Profile = ({ id }: { id: string }) => {\n  useUser(id);\n  return <div>{id}</div>;\n};\n",
        ),
        ("src/index.ts", "export * from './api/client';\n"),
    ]);
    let map = analyse(&dir);
    let client = defs(&map, "src/api/client.ts");
    assert!(
        client.contains(&("Options".into(), SymbolKind::Interface)),
        "{client:?}"
    );
    assert!(client.contains(&("HttpClient".into(), SymbolKind::Class)));
    assert!(client.contains(&("get".into(), SymbolKind::Method)));
    assert_eq!(
        defs(&map, "src/components/Profile.tsx"),
        [("Profile".into(), SymbolKind::Function)]
    );
    assert_eq!(
        map.file_summary("src/hooks/useUser.ts")
            .expect("hook")
            .imports_files,
        ["src/api/client.ts"]
    );
    assert_eq!(
        map.file_summary("src/components/Profile.tsx")
            .expect("tsx")
            .imports_files,
        ["src/hooks/useUser.ts"]
    );
    assert_eq!(
        map.file_summary("src/index.ts")
            .expect("index")
            .imports_files,
        ["src/api/client.ts"]
    );
    assert_eq!(
        usage_paths(&map, "useUser"),
        [
            "src/components/Profile.tsx:1",
            "src/components/Profile.tsx:4"
        ]
    );
}

#[test]
fn javascript_commonjs_and_esm_imports_are_found() {
    let dir = write_repo(&[
        (
            "lib/parse.js",
            "/** Parses a query string. */\nfunction parseQuery(s) {\n  return Object.fromEntries(new URLSearchParams(s));\n}\nmodule.exports = { parseQuery };\n",
        ),
        (
            "lib/router.js",
            "const { parseQuery } = require('./parse');\n\nclass Router {\n  route(url) {\n    return parseQuery(url.split('?')[1]);\n  }\n}\nmodule.exports = Router;\n",
        ),
        (
            "index.mjs",
            "import Router from './lib/router.js';\nexport default new Router();\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(
        defs(&map, "lib/parse.js"),
        [("parseQuery".into(), SymbolKind::Function)]
    );
    assert_eq!(
        defs(&map, "lib/router.js"),
        [
            ("Router".into(), SymbolKind::Class),
            ("route".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(
        map.file_summary("lib/router.js")
            .expect("router")
            .imports_files,
        ["lib/parse.js"]
    );
    assert_eq!(
        map.file_summary("index.mjs").expect("index").imports_files,
        ["lib/router.js"]
    );
    assert_eq!(
        map.symbol_summary("parseQuery").expect("pq").definitions[0].doc,
        "Parses a query string."
    );
    assert!(usage_paths(&map, "parseQuery").contains(&"lib/router.js:5".to_owned()));
}

#[test]
fn go_module_links_packages_and_same_package_files() {
    let dir = write_repo(&[
        ("go.mod", "module example.com/todo\n"),
        (
            "store/store.go",
            "package store\n\n// Store keeps items.\ntype Store struct{ items []string }\n\n// Add appends an item.\nfunc (s *Store) Add(item string) { s.items = append(s.items, item) }\n",
        ),
        (
            "store/new.go",
            "package store\n\nfunc New() *Store { return &Store{} }\n",
        ),
        (
            "cmd/todo/main.go",
            "package main\n\nimport \"example.com/todo/store\"\n\nfunc main() {\n\ts := store.New()\n\ts.Add(\"milk\")\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(
        defs(&map, "store/store.go"),
        [
            ("Store".into(), SymbolKind::Struct),
            ("Add".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(
        map.file_summary("cmd/todo/main.go")
            .expect("main")
            .imports_files,
        ["store/new.go", "store/store.go"]
    );
    assert_eq!(usage_paths(&map, "Add"), ["cmd/todo/main.go:7"]);
    // Same-package reference without an import.
    assert!(usage_paths(&map, "Store").contains(&"store/new.go:3".to_owned()));
    assert_eq!(
        map.symbol_summary("Add").expect("add").definitions[0].doc,
        "Add appends an item."
    );
    assert!(
        map.summary()
            .entry_points
            .contains(&"cmd/todo/main.go".to_owned())
    );
}

#[test]
fn java_packages_resolve_imports_and_calls() {
    let dir = write_repo(&[
        (
            "src/main/java/com/acme/model/Account.java",
            "package com.acme.model;\n\n/** A bank account. */\npublic class Account {\n    private long balance;\n\n    public void deposit(long amount) {\n        balance += amount;\n    }\n}\n",
        ),
        (
            "src/main/java/com/acme/service/Bank.java",
            "package com.acme.service;\n\nimport com.acme.model.Account;\n\npublic class Bank {\n    public static void main(String[] args) {\n        Account a = new Account();\n        a.deposit(10);\n    }\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    let account = defs(&map, "src/main/java/com/acme/model/Account.java");
    assert_eq!(
        account,
        [
            ("Account".into(), SymbolKind::Class),
            ("balance".into(), SymbolKind::Field),
            ("deposit".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(
        map.file_summary("service/Bank.java")
            .expect("bank")
            .imports_files,
        ["src/main/java/com/acme/model/Account.java"]
    );
    assert_eq!(
        usage_paths(&map, "deposit"),
        ["src/main/java/com/acme/service/Bank.java:8"]
    );
    assert_eq!(
        map.symbol_summary("Account").expect("acct").definitions[0].doc,
        "A bank account."
    );
}

#[test]
fn skipped_files_are_counted_by_reason() {
    let dir = write_repo(&[
        ("src/a.py", "def a():\n    pass\n"),
        ("vendor/lib/x.go", "package x\n"),
        ("node_modules/y/index.js", "module.exports = 1;\n"),
        ("api/v1/svc.pb.go", "package v1\n"),
        ("gen/models.py", "# @generated by tool\nX = 1\n"),
        ("static/app.min.js", "var a=1;"),
        ("data/blob.bin", "\0\0\0"),
        ("web/bundle.js", &"x".repeat(5000)),
        (".env", "A=1\n"),
        ("ignored/keep.py", "x = 1\n"),
        (".gitignore", "ignored/\n"),
    ]);
    let map = analyse(&dir);
    let paths: Vec<&str> = map.files().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, [".gitignore", "src/a.py"]);
    let s = map.skipped();
    assert_eq!(s.get("vendored"), Some(&2));
    assert_eq!(s.get("generated"), Some(&2));
    assert_eq!(s.get("minified"), Some(&2));
    assert_eq!(s.get("binary"), Some(&1));
    assert_eq!(s.get("sensitive"), Some(&1));
}
