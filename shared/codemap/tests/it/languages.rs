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

#[test]
fn c_headers_and_sources_define_functions_and_includes() {
    let dir = write_repo(&[
        (
            "src/buffer.h",
            "#ifndef BUFFER_H\n#define BUFFER_H\n\n#include <stddef.h>\n\n#define BUFFER_MAX 4096\n\n/* A growable byte buffer. */\ntypedef struct buffer {\n    char *data;\n    size_t len;\n} buffer_t;\n\nint buffer_append(buffer_t *b, const char *s, size_t n);\n\n#endif\n",
        ),
        (
            "src/buffer.c",
            "#include \"buffer.h\"\n#include <string.h>\n\n/* Appends n bytes of s. */\nint buffer_append(buffer_t *b, const char *s, size_t n)\n{\n    memcpy(b->data + b->len, s, n);\n    b->len += n;\n    return 0;\n}\n\nstatic char *last_byte(buffer_t *b) { return b->data + b->len - 1; }\n",
        ),
        (
            "src/main.c",
            "#include \"buffer.h\"\nint main(void)\n{\n    buffer_t b = {0};\n    return buffer_append(&b, \"hi\", 2);\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    let header = map.file_summary("src/buffer.h").expect("header");
    assert_eq!(header.language, "c");
    // The include guard has no value and is not a definition.
    assert_eq!(
        defs(&map, "src/buffer.h"),
        [
            ("BUFFER_MAX".into(), SymbolKind::Macro),
            ("buffer_t".into(), SymbolKind::Type),
            ("buffer".into(), SymbolKind::Struct),
            ("buffer_append".into(), SymbolKind::Function)
        ]
    );
    assert_eq!(header.imports, ["<stddef.h>"]);
    assert_eq!(
        defs(&map, "src/buffer.c"),
        [
            ("buffer_append".into(), SymbolKind::Function),
            ("last_byte".into(), SymbolKind::Function)
        ]
    );
    assert_eq!(
        map.file_summary("src/buffer.c").expect("source").imports,
        ["buffer.h", "<string.h>"]
    );
    let append = map.symbol_summary("buffer_append").expect("append");
    let source_def = append
        .definitions
        .iter()
        .find(|d| d.path == "src/buffer.c")
        .expect("definition in the source file");
    assert_eq!(
        source_def.signature,
        "int buffer_append(buffer_t *b, const char *s, size_t n)"
    );
    assert_eq!(source_def.doc, "Appends n bytes of s.");
    assert_eq!(
        map.symbol_summary("buffer_t").expect("typedef").definitions[0].doc,
        "A growable byte buffer."
    );
    assert_eq!(usage_paths(&map, "buffer_append"), ["src/main.c:5"]);
    // A preprocessor line above a definition is not its doc comment.
    assert_eq!(
        map.symbol_summary("main").expect("main").definitions[0].doc,
        ""
    );
}

#[test]
fn cpp_classes_namespaces_and_out_of_line_methods() {
    let dir = write_repo(&[
        (
            "include/geo/shape.hpp",
            "#pragma once\n#include <string>\n\nnamespace geo {\n\n/// A closed 2-D shape.\nclass Shape {\npublic:\n    virtual ~Shape() = default;\n    virtual double area() const = 0;\n    std::string name() const { return \"shape\"; }\n};\n\nstruct Point { double x, y; };\n\n}  // namespace geo\n",
        ),
        (
            "src/circle.cpp",
            "#include \"geo/shape.hpp\"\n#include <cmath>\n\nnamespace geo {\n\nclass Circle : public Shape {\npublic:\n    explicit Circle(double r) : r_(r) {}\n    double area() const override;\nprivate:\n    double r_;\n};\n\ndouble Circle::area() const {\n    return M_PI * r_ * r_;\n}\n\n}  // namespace geo\n\ntemplate <typename T>\nT twice(const T& v) { return v + v; }\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(
        map.file_summary("src/circle.cpp").expect("cpp").language,
        "cpp"
    );
    assert_eq!(
        defs(&map, "include/geo/shape.hpp"),
        [
            ("geo".into(), SymbolKind::Module),
            ("Shape".into(), SymbolKind::Class),
            ("~Shape".into(), SymbolKind::Method),
            ("area".into(), SymbolKind::Method),
            ("name".into(), SymbolKind::Method),
            ("Point".into(), SymbolKind::Struct)
        ]
    );
    assert_eq!(
        defs(&map, "src/circle.cpp"),
        [
            ("geo".into(), SymbolKind::Module),
            ("Circle".into(), SymbolKind::Class),
            ("Circle".into(), SymbolKind::Method),
            ("area".into(), SymbolKind::Method),
            ("area".into(), SymbolKind::Method),
            ("twice".into(), SymbolKind::Function)
        ]
    );
    let circle = map.file_summary("src/circle.cpp").expect("circle");
    assert_eq!(circle.imports, ["geo/shape.hpp", "<cmath>"]);
    assert_eq!(circle.imports_files, ["include/geo/shape.hpp"]);
    let area = map.symbol_summary("area").expect("area");
    assert!(
        area.definitions
            .iter()
            .any(|d| d.signature == "double Circle::area() const"),
        "{:?}",
        area.definitions
    );
    assert_eq!(
        map.symbol_summary("Shape").expect("shape").definitions[0].doc,
        "A closed 2-D shape."
    );
}

#[test]
fn csharp_namespaces_usings_and_members() {
    let dir = write_repo(&[
        (
            "src/Shop/Models/Order.cs",
            "using System;\nusing System.Collections.Generic;\n\nnamespace Shop.Models\n{\n    public delegate void Changed(Order order);\n\n    /// A customer order.\n    public class Order\n    {\n        public List<decimal> Prices { get; } = new();\n        private readonly int id, version;\n        public event Changed OnChange;\n\n        public Order() { }\n        ~Order() { }\n\n        public decimal this[int i] => Prices[i];\n        public static Order operator +(Order a, Order b) => a;\n        public static implicit operator decimal(Order o) => o.Total();\n\n        public decimal Total()\n        {\n            decimal sum = 0;\n            foreach (var p in Prices) sum += p;\n            return sum;\n        }\n    }\n\n    public interface IPriced { decimal Total(); }\n}\n",
        ),
        (
            "src/Shop/Billing/Invoicer.cs",
            "using Shop.Models;\nusing Fmt = System.Globalization.CultureInfo;\n\nnamespace Shop.Billing;\n\npublic record Invoice(string Text);\n\npublic static class Invoicer\n{\n    public static Invoice Create(Order order) => new Invoice(order.Total().ToString());\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    let order = map.file_summary("src/Shop/Models/Order.cs").expect("order");
    assert_eq!(order.language, "csharp");
    assert_eq!(order.imports, ["System", "System.Collections.Generic"]);
    assert_eq!(
        defs(&map, "src/Shop/Models/Order.cs"),
        [
            ("Shop.Models".into(), SymbolKind::Module),
            ("Changed".into(), SymbolKind::Type),
            ("Order".into(), SymbolKind::Class),
            ("Prices".into(), SymbolKind::Field),
            ("id".into(), SymbolKind::Field),
            ("version".into(), SymbolKind::Field),
            ("OnChange".into(), SymbolKind::Field),
            ("Order".into(), SymbolKind::Constructor),
            ("Order".into(), SymbolKind::Method),
            ("this".into(), SymbolKind::Method),
            ("+".into(), SymbolKind::Method),
            ("operator".into(), SymbolKind::Method),
            ("Total".into(), SymbolKind::Method),
            ("IPriced".into(), SymbolKind::Interface),
            ("Total".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(
        defs(&map, "src/Shop/Billing/Invoicer.cs"),
        [
            ("Shop.Billing".into(), SymbolKind::Module),
            ("Invoice".into(), SymbolKind::Class),
            ("Invoicer".into(), SymbolKind::Class),
            ("Create".into(), SymbolKind::Method)
        ]
    );
    // An alias (`using Fmt = ...`) binds a name; the plain using is the import.
    assert_eq!(
        map.file_summary("src/Shop/Billing/Invoicer.cs")
            .expect("invoicer")
            .imports,
        ["Shop.Models"]
    );
    let create = map.symbol_summary("Create").expect("create");
    assert_eq!(
        create.definitions[0].signature,
        "public static Invoice Create(Order order)"
    );
    assert_eq!(
        map.symbol_summary("Order").expect("order").definitions[0].doc,
        "A customer order."
    );
    // Indexers, operators and conversions are listed by their signatures;
    // a property's and an indexer's end before their accessors.
    let signature = |name: &str| {
        map.symbol_summary(name).expect(name).definitions[0]
            .signature
            .clone()
    };
    assert_eq!(signature("this"), "public decimal this[int i]");
    assert_eq!(signature("Prices"), "public List<decimal> Prices");
    assert_eq!(
        signature("+"),
        "public static Order operator +(Order a, Order b)"
    );
    assert_eq!(
        signature("operator"),
        "public static implicit operator decimal(Order o)"
    );
    assert_eq!(
        usage_paths(&map, "Total"),
        [
            "src/Shop/Billing/Invoicer.cs:10",
            "src/Shop/Models/Order.cs:20"
        ]
    );
}

#[test]
fn ruby_classes_modules_and_requires() {
    let dir = write_repo(&[
        (
            "lib/shop/cart.rb",
            "require 'json'\nrequire_relative 'item'\n\nmodule Shop\n  # A shopping cart.\n  class Cart < Base\n    def initialize(items = [])\n      @items = items\n    end\n\n    # Sum of item prices.\n    def total(discount: 0)\n      @items.sum(&:price) - discount\n    end\n\n    def self.empty\n      new([])\n    end\n  end\nend\n",
        ),
        (
            "lib/shop/item.rb",
            "module Shop\n  class Item\n    attr_reader :price\n\n    def initialize(price)\n      @price = price\n    end\n  end\nend\n",
        ),
        (
            "bin/checkout.rb",
            "require_relative '../lib/shop/cart'\n\nVERSION = '1.0'\n\ndef checkout(cart)\n  puts cart.total\nend\n",
        ),
    ]);
    let map = analyse(&dir);
    let cart = map.file_summary("lib/shop/cart.rb").expect("cart");
    assert_eq!(cart.language, "ruby");
    assert_eq!(
        defs(&map, "lib/shop/cart.rb"),
        [
            ("Shop".into(), SymbolKind::Module),
            ("Cart".into(), SymbolKind::Class),
            ("initialize".into(), SymbolKind::Method),
            ("total".into(), SymbolKind::Method),
            ("empty".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(cart.imports, ["json", "item"]);
    assert_eq!(cart.imports_files, ["lib/shop/item.rb"]);
    assert_eq!(
        defs(&map, "bin/checkout.rb"),
        [
            ("VERSION".into(), SymbolKind::Constant),
            ("checkout".into(), SymbolKind::Function)
        ]
    );
    assert_eq!(
        map.file_summary("bin/checkout.rb")
            .expect("checkout")
            .imports_files,
        ["lib/shop/cart.rb"]
    );
    let total = map.symbol_summary("total").expect("total");
    assert_eq!(total.definitions[0].signature, "def total(discount: 0)");
    assert_eq!(total.definitions[0].doc, "Sum of item prices.");
    assert_eq!(
        map.symbol_summary("Cart").expect("cart").definitions[0].signature,
        "class Cart < Base"
    );
    assert_eq!(usage_paths(&map, "total"), ["bin/checkout.rb:6"]);
}

#[test]
fn php_namespaces_uses_and_requires() {
    let dir = write_repo(&[
        (
            "src/Models/User.php",
            "<?php\n\nnamespace App\\Models;\n\n/** A registered user. */\nclass User\n{\n    private string $email;\n\n    public function __construct(string $email)\n    {\n        $this->email = $email;\n    }\n\n    public function email(): string\n    {\n        return $this->email;\n    }\n}\n",
        ),
        (
            "src/Http/UserController.php",
            "<?php\n\nnamespace App\\Http;\n\nuse App\\Models\\User;\nuse Psr\\Log\\LoggerInterface as Logger;\n\nrequire_once 'helpers.php';\n\ninterface Controller {}\n\ntrait Renders { public function render(): string { return ''; } }\n\nfinal class UserController implements Controller\n{\n    public function show(User $user): string\n    {\n        return $user->email();\n    }\n}\n\nfunction route(string $path): ?string\n{\n    return null;\n}\n",
        ),
        (
            "src/Http/helpers.php",
            "<?php\n\nfunction h(string $s): string { return $s; }\n",
        ),
    ]);
    let map = analyse(&dir);
    let user = map.file_summary("src/Models/User.php").expect("user");
    assert_eq!(user.language, "php");
    assert_eq!(
        defs(&map, "src/Models/User.php"),
        [
            ("App\\Models".into(), SymbolKind::Module),
            ("User".into(), SymbolKind::Class),
            ("email".into(), SymbolKind::Field),
            ("__construct".into(), SymbolKind::Method),
            ("email".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(
        defs(&map, "src/Http/UserController.php"),
        [
            ("App\\Http".into(), SymbolKind::Module),
            ("Controller".into(), SymbolKind::Interface),
            ("Renders".into(), SymbolKind::Trait),
            ("render".into(), SymbolKind::Method),
            ("UserController".into(), SymbolKind::Class),
            ("show".into(), SymbolKind::Method),
            ("route".into(), SymbolKind::Function)
        ]
    );
    let controller = map
        .file_summary("src/Http/UserController.php")
        .expect("controller");
    // The alias of a `use ... as` is not the import; the required file is.
    assert_eq!(
        controller.imports,
        [
            "App\\Models\\User",
            "Psr\\Log\\LoggerInterface",
            "helpers.php"
        ]
    );
    let show = map.symbol_summary("show").expect("show");
    assert_eq!(
        show.definitions[0].signature,
        "public function show(User $user): string"
    );
    assert_eq!(
        map.symbol_summary("User").expect("user class").definitions[0].doc,
        "A registered user."
    );
}

/// Members of containers nested past the query's start depth: a C# test
/// fixture's classes inside a class inside a namespace block, a Ruby class
/// inside two modules, a decorated Python method three classes down.
#[test]
fn members_of_deeply_nested_containers_are_found() {
    let dir = write_repo(&[
        (
            "src/UnitTests/NullBehavior.cs",
            "using Xunit;\n\nnamespace AutoMapper.UnitTests\n{\n    public class NullBehavior\n    {\n        public class When_mapping_null : SpecBase\n        {\n            public class ModelDto\n            {\n                public string Name { get; set; }\n\n                public void Reset() { }\n            }\n\n            [Fact]\n            public void Should_map_null() { }\n        }\n    }\n}\n",
        ),
        (
            "lib/rack/auth/basic.rb",
            "module Rack\n  module Auth\n    class Basic\n      def call(env)\n        env\n      end\n    end\n  end\nend\n",
        ),
        (
            "pkg/outer.py",
            "class A:\n    class B:\n        class C:\n            @staticmethod\n            def deep():\n                return 1\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(
        defs(&map, "src/UnitTests/NullBehavior.cs"),
        [
            ("AutoMapper.UnitTests".into(), SymbolKind::Module),
            ("NullBehavior".into(), SymbolKind::Class),
            ("When_mapping_null".into(), SymbolKind::Class),
            ("ModelDto".into(), SymbolKind::Class),
            ("Name".into(), SymbolKind::Field),
            ("Reset".into(), SymbolKind::Method),
            ("Should_map_null".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(
        defs(&map, "lib/rack/auth/basic.rb"),
        [
            ("Rack".into(), SymbolKind::Module),
            ("Auth".into(), SymbolKind::Module),
            ("Basic".into(), SymbolKind::Class),
            ("call".into(), SymbolKind::Method)
        ]
    );
    assert_eq!(
        defs(&map, "pkg/outer.py"),
        [
            ("A".into(), SymbolKind::Class),
            ("B".into(), SymbolKind::Class),
            ("C".into(), SymbolKind::Class),
            ("deep".into(), SymbolKind::Method)
        ]
    );
    // Found once each, under the class that holds them.
    let reset = map.symbol_summary("Reset").expect("reset");
    assert_eq!(reset.definitions.len(), 1);
    assert_eq!(reset.definitions[0].signature, "public void Reset()");
}
