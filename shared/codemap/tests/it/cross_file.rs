//! C, C++, C#, Ruby and PHP on real-shaped projects: definitions with their
//! signatures (destructors, operators, templates, Ruby's method forms) and
//! includes / requires / usings resolved to the repository's files, so a use
//! in one file reaches the definition in another.

use contexten_codemap::{CodeMap, SymbolKind};

use crate::helpers::{analyse, write_repo};

fn imports_files(map: &CodeMap, path: &str) -> Vec<String> {
    map.file_summary(path).expect("file in map").imports_files
}

/// `(name, kind, signature)` of a file's definitions.
fn sigs(map: &CodeMap, path: &str) -> Vec<(String, SymbolKind, String)> {
    map.file_summary(path)
        .expect("file in map")
        .symbols
        .into_iter()
        .map(|s| (s.name, s.kind, s.signature))
        .collect()
}

fn sig_of(map: &CodeMap, path: &str, name: &str) -> String {
    sigs(map, path)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("{name} in {path}: {:?}", sigs(map, path)))
        .2
}

/// Where `name` is used, as `path:line`, and the files defining it.
fn uses(map: &CodeMap, name: &str) -> (Vec<String>, Vec<String>) {
    let s = map.symbol_summary(name).expect("symbol found");
    let mut at: Vec<String> = s
        .usages
        .iter()
        .map(|u| format!("{}:{}", u.path, u.line))
        .collect();
    at.dedup();
    let mut defined: Vec<String> = s.definitions.into_iter().map(|d| d.path).collect();
    defined.dedup();
    (at, defined)
}

/// Whether `from` has a reference edge to `to` that `dependencies` shows:
/// a definition of `symbol` using something defined in `to`.
fn depends_on(map: &CodeMap, symbol: &str, dep: &str, dep_path: &str) -> bool {
    map.symbol_summary(symbol)
        .expect("symbol found")
        .dependencies
        .iter()
        .any(|d| d.name == dep && d.path == dep_path)
}

#[test]
fn c_library_includes_resolve_next_to_the_file_and_on_the_include_path() {
    let dir = write_repo(&[
        (
            "include/kv/store.h",
            "#ifndef KV_STORE_H\n#define KV_STORE_H\n\n#include <stddef.h>\n\n#define KV_MAX_KEY 256\n\n/* An open key-value store. */\ntypedef struct kv_store kv_store;\n\n/* Opens the store at path; NULL on failure. */\nkv_store *kv_open(const char *path);\nint kv_put(kv_store *s, const char *key, const char *value);\n\n#endif\n",
        ),
        (
            "src/internal/hash.h",
            "#pragma once\n#include <stdint.h>\n\n/* FNV-1a of a NUL-terminated string. */\nstatic inline uint32_t kv_hash(const char *s)\n{\n    uint32_t h = 2166136261u;\n    while (*s) { h ^= (unsigned char)*s++; h *= 16777619u; }\n    return h;\n}\n",
        ),
        (
            // Same relative path elsewhere: the include next to the file wins.
            "third_party/internal/hash.h",
            "#pragma once\nint kv_hash_other(const char *s);\n",
        ),
        (
            "src/store.c",
            "#include \"kv/store.h\"\n#include \"internal/hash.h\"\n#include <stdlib.h>\n#include <string.h>\n\nstruct kv_store {\n    char *buckets[1024];\n};\n\nkv_store *kv_open(const char *path)\n{\n    (void)path;\n    return calloc(1, sizeof(kv_store));\n}\n\nint kv_put(kv_store *s, const char *key, const char *value)\n{\n    uint32_t slot = kv_hash(key) % 1024;\n    s->buckets[slot] = strdup(value);\n    return 0;\n}\n",
        ),
        (
            "tools/kvcli.c",
            "#include <stdio.h>\n#include <kv/store.h>\n\nint main(int argc, char **argv)\n{\n    kv_store *s = kv_open(argc > 1 ? argv[1] : \"db\");\n    return kv_put(s, \"k\", \"v\");\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(
        imports_files(&map, "src/store.c"),
        ["include/kv/store.h", "src/internal/hash.h"]
    );
    // `<kv/store.h>` names a directory of the project's include path;
    // `<stdio.h>` is the system's.
    assert_eq!(imports_files(&map, "tools/kvcli.c"), ["include/kv/store.h"]);
    assert_eq!(
        sigs(&map, "include/kv/store.h"),
        [
            (
                "KV_MAX_KEY".into(),
                SymbolKind::Macro,
                "#define KV_MAX_KEY 256".into()
            ),
            (
                "kv_store".into(),
                SymbolKind::Type,
                "typedef struct kv_store kv_store".into()
            ),
            (
                "kv_open".into(),
                SymbolKind::Function,
                "kv_store *kv_open(const char *path)".into()
            ),
            (
                "kv_put".into(),
                SymbolKind::Function,
                "int kv_put(kv_store *s, const char *key, const char *value)".into()
            ),
        ]
    );
    assert_eq!(
        sig_of(&map, "src/internal/hash.h", "kv_hash"),
        "static inline uint32_t kv_hash(const char *s)"
    );
    // The use in store.c reaches the included header's definition, not the
    // look-alike under third_party.
    let (at, defined) = uses(&map, "kv_hash");
    assert_eq!(defined, ["src/internal/hash.h"]);
    assert_eq!(at, ["src/store.c:18"]);
    assert!(depends_on(&map, "kv_put", "kv_hash", "src/internal/hash.h"));
    assert!(depends_on(&map, "main", "kv_open", "include/kv/store.h"));
}

#[test]
fn cpp_destructors_operators_and_templates_with_relative_includes() {
    let dir = write_repo(&[
        (
            "include/shapes/shape.hpp",
            "#pragma once\n#include <string>\n\nnamespace shapes {\n\n/// A closed 2-D shape.\nclass Shape {\npublic:\n    virtual ~Shape();\n    virtual double area() const = 0;\n    bool operator==(const Shape& other) const;\n};\n\n/// Clamps v into [lo, hi].\ntemplate <typename T>\nT clamp(T v, T lo, T hi) {\n    return v < lo ? lo : (hi < v ? hi : v);\n}\n\n}  // namespace shapes\n",
        ),
        (
            "src/shape.cpp",
            "#include \"shapes/shape.hpp\"\n\nnamespace shapes {\n\nShape::~Shape() {}\n\nbool Shape::operator==(const Shape& other) const {\n    return area() == other.area();\n}\n\n}  // namespace shapes\n",
        ),
        (
            "src/circle.hpp",
            "#pragma once\n#include \"../include/shapes/shape.hpp\"\n\nclass Circle : public shapes::Shape {\npublic:\n    explicit Circle(double r) : r_(r) {}\n    ~Circle() override {}\n    double area() const override { return 3.14159 * r_ * r_; }\n    Circle& operator+=(double dr) { r_ += dr; return *this; }\nprivate:\n    double r_;\n};\n",
        ),
        (
            "src/main.cpp",
            "#include \"circle.hpp\"\n#include <iostream>\n\nint main() {\n    Circle c(2.0);\n    c += 1.0;\n    std::cout << shapes::clamp(c.area(), 0.0, 10.0) << std::endl;\n    return 0;\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(imports_files(&map, "src/main.cpp"), ["src/circle.hpp"]);
    assert_eq!(
        imports_files(&map, "src/circle.hpp"),
        ["include/shapes/shape.hpp"]
    );
    assert_eq!(
        imports_files(&map, "src/shape.cpp"),
        ["include/shapes/shape.hpp"]
    );
    assert_eq!(
        sigs(&map, "include/shapes/shape.hpp"),
        [
            (
                "shapes".into(),
                SymbolKind::Module,
                "namespace shapes".into()
            ),
            ("Shape".into(), SymbolKind::Class, "class Shape".into()),
            (
                "~Shape".into(),
                SymbolKind::Method,
                "virtual ~Shape()".into()
            ),
            (
                "area".into(),
                SymbolKind::Method,
                "virtual double area() const = 0".into()
            ),
            (
                "operator==".into(),
                SymbolKind::Method,
                "bool operator==(const Shape& other) const".into()
            ),
            (
                "clamp".into(),
                SymbolKind::Function,
                "template <typename T> T clamp(T v, T lo, T hi)".into()
            ),
        ]
    );
    assert_eq!(
        sigs(&map, "src/shape.cpp"),
        [
            (
                "shapes".into(),
                SymbolKind::Module,
                "namespace shapes".into()
            ),
            (
                "~Shape".into(),
                SymbolKind::Method,
                "Shape::~Shape()".into()
            ),
            (
                "operator==".into(),
                SymbolKind::Method,
                "bool Shape::operator==(const Shape& other) const".into()
            ),
        ]
    );
    assert_eq!(
        sigs(&map, "src/circle.hpp"),
        [
            (
                "Circle".into(),
                SymbolKind::Class,
                "class Circle : public shapes::Shape".into()
            ),
            (
                "Circle".into(),
                SymbolKind::Method,
                "explicit Circle(double r) : r_(r)".into()
            ),
            (
                "~Circle".into(),
                SymbolKind::Method,
                "~Circle() override".into()
            ),
            (
                "area".into(),
                SymbolKind::Method,
                "double area() const override".into()
            ),
            (
                "operator+=".into(),
                SymbolKind::Method,
                "Circle& operator+=(double dr)".into()
            ),
        ]
    );
    assert_eq!(
        map.symbol_summary("clamp").expect("clamp").definitions[0].doc,
        "Clamps v into [lo, hi]."
    );
    // The template used in main.cpp is the one of the header circle.hpp includes.
    let (at, defined) = uses(&map, "clamp");
    assert_eq!(defined, ["include/shapes/shape.hpp"]);
    assert_eq!(at, ["src/main.cpp:7"]);
}

#[test]
fn csharp_usings_resolve_to_the_namespace_files_whose_types_are_used() {
    let dir = write_repo(&[
        (
            "src/Shop.Core/Models/Order.cs",
            "using System;\nusing System.Collections.Generic;\n\nnamespace Shop.Core.Models\n{\n    /// <summary>A customer order.</summary>\n    public class Order\n    {\n        private readonly List<decimal> _prices = new();\n\n        public Order(IEnumerable<decimal> prices) => _prices.AddRange(prices);\n\n        public decimal Total() => _prices.Sum();\n\n        public T Convert<T>(Func<decimal, T> f) where T : struct => f(Total());\n    }\n\n    public enum Status { Open, Paid }\n}\n",
        ),
        (
            // Same namespace, not used by the controller: not linked.
            "src/Shop.Core/Models/Customer.cs",
            "namespace Shop.Core.Models;\n\npublic class Customer\n{\n    public string Name { get; init; } = \"\";\n}\n",
        ),
        (
            "src/Shop.Core/Util/Money.cs",
            "namespace Shop.Core.Util\n{\n    public static class Money\n    {\n        public static string Format(decimal amount) => amount.ToString(\"0.00\");\n    }\n}\n",
        ),
        (
            "src/Shop.Web/Controllers/OrdersController.cs",
            "using System;\nusing Shop.Core.Models;\nusing static Shop.Core.Util.Money;\n\nnamespace Shop.Web.Controllers\n{\n    public class OrdersController\n    {\n        public string Show(Order order)\n        {\n            return Format(order.Total());\n        }\n    }\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    let controller = "src/Shop.Web/Controllers/OrdersController.cs";
    assert_eq!(
        imports_files(&map, controller),
        [
            "src/Shop.Core/Models/Order.cs",
            "src/Shop.Core/Util/Money.cs"
        ]
    );
    assert_eq!(
        sigs(&map, "src/Shop.Core/Models/Order.cs"),
        [
            (
                "Shop.Core.Models".into(),
                SymbolKind::Module,
                "namespace Shop.Core.Models".into()
            ),
            (
                "Order".into(),
                SymbolKind::Class,
                "public class Order".into()
            ),
            (
                "_prices".into(),
                SymbolKind::Field,
                "private readonly List<decimal> _prices = new()".into()
            ),
            (
                "Order".into(),
                SymbolKind::Constructor,
                "public Order(IEnumerable<decimal> prices)".into()
            ),
            (
                "Total".into(),
                SymbolKind::Method,
                "public decimal Total()".into()
            ),
            (
                "Convert".into(),
                SymbolKind::Method,
                "public T Convert<T>(Func<decimal, T> f) where T : struct".into()
            ),
            (
                "Status".into(),
                SymbolKind::Enum,
                "public enum Status".into()
            ),
        ]
    );
    assert_eq!(
        sig_of(&map, controller, "Show"),
        "public string Show(Order order)"
    );
    let (at, defined) = uses(&map, "Total");
    assert_eq!(defined, ["src/Shop.Core/Models/Order.cs"]);
    assert!(at.contains(&format!("{controller}:11")), "{at:?}");
    assert!(depends_on(
        &map,
        "Show",
        "Format",
        "src/Shop.Core/Util/Money.cs"
    ));
}

#[test]
fn ruby_requires_resolve_relative_and_on_the_load_path() {
    let dir = write_repo(&[
        (
            "lib/billing.rb",
            "require 'bigdecimal'\nrequire 'billing/invoice'\n\n# Invoicing for the shop.\nmodule Billing\n  VERSION = '2.1.0'\nend\n",
        ),
        (
            "lib/billing/invoice.rb",
            "require_relative 'line_item'\n\nmodule Billing\n  # An invoice of line items.\n  class Invoice < Base\n    include Comparable\n    attr_reader :lines\n\n    def initialize(customer, lines = [])\n      @customer = customer\n      @lines = lines\n    end\n\n    # Sum of the line items, in currency.\n    def total(currency: 'EUR', &block)\n      lines.sum { |l| l.amount }\n    end\n\n    def self.build(*args, **opts)\n      new(*args, **opts)\n    end\n\n    def refund amount\n      @refunded = amount\n    end\n\n    def to_s = \"Invoice for #{@customer}\"\n\n    def <=>(other)\n      total <=> other.total\n    end\n  end\nend\n",
        ),
        (
            "lib/billing/line_item.rb",
            "module Billing\n  class LineItem < Struct.new(:name, :price, :qty)\n    def amount\n      price * qty\n    end\n  end\nend\n",
        ),
        (
            "app/jobs/send_invoice_job.rb",
            "require 'billing'\n\nclass SendInvoiceJob < ApplicationJob\n  def perform(invoice_id)\n    invoice = Billing::Invoice.build(invoice_id)\n    invoice.total\n  end\nend\n",
        ),
    ]);
    let map = analyse(&dir);
    assert_eq!(
        imports_files(&map, "lib/billing.rb"),
        ["lib/billing/invoice.rb"]
    );
    assert_eq!(
        imports_files(&map, "lib/billing/invoice.rb"),
        ["lib/billing/line_item.rb"]
    );
    assert_eq!(
        imports_files(&map, "app/jobs/send_invoice_job.rb"),
        ["lib/billing.rb"]
    );
    assert_eq!(
        sigs(&map, "lib/billing/invoice.rb"),
        [
            (
                "Billing".into(),
                SymbolKind::Module,
                "module Billing".into()
            ),
            (
                "Invoice".into(),
                SymbolKind::Class,
                "class Invoice < Base".into()
            ),
            (
                "initialize".into(),
                SymbolKind::Method,
                "def initialize(customer, lines = [])".into()
            ),
            (
                "total".into(),
                SymbolKind::Method,
                "def total(currency: 'EUR', &block)".into()
            ),
            (
                "build".into(),
                SymbolKind::Method,
                "def self.build(*args, **opts)".into()
            ),
            (
                "refund".into(),
                SymbolKind::Method,
                "def refund amount".into()
            ),
            ("to_s".into(), SymbolKind::Method, "def to_s".into()),
            ("<=>".into(), SymbolKind::Method, "def <=>(other)".into()),
        ]
    );
    assert_eq!(
        sig_of(&map, "lib/billing/line_item.rb", "LineItem"),
        "class LineItem < Struct.new(:name, :price, :qty)"
    );
    assert_eq!(
        map.symbol_summary("total").expect("total").definitions[0].doc,
        "Sum of the line items, in currency."
    );
    // `amount` is used in invoice.rb and defined in the file it requires.
    let (at, defined) = uses(&map, "amount");
    assert_eq!(defined, ["lib/billing/line_item.rb"]);
    assert!(
        at.contains(&"lib/billing/invoice.rb:16".to_owned()),
        "{at:?}"
    );
    assert!(depends_on(
        &map,
        "perform",
        "build",
        "lib/billing/invoice.rb"
    ));
}

#[test]
fn php_uses_resolve_by_namespace_and_psr4_and_requires_by_path() {
    let dir = write_repo(&[
        (
            "composer.json",
            "{\"autoload\": {\"psr-4\": {\"App\\\\\": \"src/\"}}}\n",
        ),
        (
            "src/Models/User.php",
            "<?php\n\ndeclare(strict_types=1);\n\nnamespace App\\Models;\n\n/** A registered user. */\nfinal class User\n{\n    public function __construct(private string $email, private Role $role)\n    {\n    }\n\n    public function email(): string\n    {\n        return $this->email;\n    }\n\n    public static function fromArray(array $row): static\n    {\n        return new static($row['email'], Role::from($row['role']));\n    }\n}\n",
        ),
        (
            "src/Models/Role.php",
            "<?php\n\nnamespace App\\Models;\n\nenum Role: string\n{\n    case Admin = 'admin';\n    case Member = 'member';\n}\n",
        ),
        (
            "src/Support/helpers.php",
            "<?php\n\n/** Escapes for HTML. */\nfunction esc(?string $s): string\n{\n    return htmlspecialchars($s ?? '', ENT_QUOTES);\n}\n",
        ),
        (
            // No namespace declaration: found by its PSR-4 path.
            "src/Mail/Mailer.php",
            "<?php\n\nclass Mailer\n{\n    public function send(string $to, string $body): bool\n    {\n        return mail($to, 'Hello', $body);\n    }\n}\n",
        ),
        (
            "src/Http/Controllers/UserController.php",
            "<?php\n\nnamespace App\\Http\\Controllers;\n\nuse App\\Models\\User;\nuse App\\Mail\\Mailer;\nuse Psr\\Log\\LoggerInterface as Logger;\n\nrequire_once __DIR__ . '/../../Support/helpers.php';\n\nclass UserController extends Controller\n{\n    public function __construct(private Logger $log, private Mailer $mailer) {}\n\n    public function show(User $user): string\n    {\n        $this->mailer->send($user->email(), 'seen');\n        return esc($user->email());\n    }\n}\n",
        ),
    ]);
    let map = analyse(&dir);
    let controller = "src/Http/Controllers/UserController.php";
    assert_eq!(
        map.file_summary(controller).expect("controller").imports,
        [
            "App\\Models\\User",
            "App\\Mail\\Mailer",
            "Psr\\Log\\LoggerInterface",
            "/../../Support/helpers.php"
        ]
    );
    assert_eq!(
        imports_files(&map, controller),
        [
            "src/Mail/Mailer.php",
            "src/Models/User.php",
            "src/Support/helpers.php"
        ]
    );
    assert_eq!(
        sigs(&map, "src/Models/User.php"),
        [
            (
                "App\\Models".into(),
                SymbolKind::Module,
                "namespace App\\Models".into()
            ),
            ("User".into(), SymbolKind::Class, "final class User".into()),
            (
                "__construct".into(),
                SymbolKind::Method,
                "public function __construct(private string $email, private Role $role)".into()
            ),
            (
                "email".into(),
                SymbolKind::Method,
                "public function email(): string".into()
            ),
            (
                "fromArray".into(),
                SymbolKind::Method,
                "public static function fromArray(array $row): static".into()
            ),
        ]
    );
    assert_eq!(
        sig_of(&map, "src/Support/helpers.php", "esc"),
        "function esc(?string $s): string"
    );
    assert_eq!(
        sig_of(&map, controller, "show"),
        "public function show(User $user): string"
    );
    let (at, defined) = uses(&map, "email");
    assert_eq!(defined, ["src/Models/User.php"]);
    assert!(at.contains(&format!("{controller}:17")), "{at:?}");
    assert!(depends_on(&map, "show", "send", "src/Mail/Mailer.php"));
    assert!(depends_on(&map, "show", "esc", "src/Support/helpers.php"));
}
