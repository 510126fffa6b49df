//! Prompt assembly stays within its budget.

use contexten_codemap::{ItemKind, Query, assemble_prompt, tokenizer_for};
use proptest::prelude::*;

use crate::helpers::{analyse, write_repo};

fn repo() -> tempfile::TempDir {
    let mut files: Vec<(String, String)> = (0..12)
        .map(|i| {
            (
                format!("pkg/module_{i}.py"),
                format!("\"\"\"Module {i}.\"\"\"\n\n\ndef handler_{i}(request):\n    \"\"\"Handles request kind {i}.\"\"\"\n{}    return request\n\n\nclass Service{i}:\n    def run(self):\n        return handler_{i}(None)\n", "    request = request.strip()\n".repeat(20)),
            )
        })
        .collect();
    files.push(("README.md".into(), "# pkg\nRequest handlers.\n".into()));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    write_repo(&refs)
}

#[test]
fn prompt_has_summary_skeletons_and_bodies_in_order() {
    let dir = repo();
    let map = analyse(&dir);
    let request = "handler_3 strips requests twice";
    let ranked = map.query(&Query::new(request, 5));
    let p = assemble_prompt(&map, request, &ranked, 4000, "gpt-4.1");
    assert!(p.tokens <= 4000);
    assert_eq!(p.encoding, "o200k_base");
    assert_eq!(p.included[0].kind, ItemKind::Summary);
    assert_eq!(p.included[1].path.as_deref(), Some("pkg/module_3.py"));
    assert!(
        p.included
            .iter()
            .any(|i| i.kind == ItemKind::Body && i.symbol.as_deref() == Some("handler_3"))
    );
    assert!(p.text.ends_with(request));
    assert!(p.text.contains("def handler_3(request)"));
    assert!(!p.request_truncated);
    let (bpe, _) = tokenizer_for("gpt-4.1");
    assert_eq!(bpe.count_ordinary(&p.text), p.tokens);
}

#[test]
fn a_request_larger_than_the_budget_is_truncated_with_a_marker() {
    let dir = repo();
    let map = analyse(&dir);
    let request = "handler ".repeat(3000);
    let p = assemble_prompt(
        &map,
        &request,
        &map.query(&Query::new("handler", 3)),
        500,
        "gpt-4",
    );
    assert!(p.tokens <= 500);
    assert!(p.request_truncated);
    assert!(p.included.is_empty());
    assert!(p.text.contains("[request truncated"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn prompt_never_exceeds_its_budget(budget in 0usize..6000, req_words in 0usize..400, model_o200k in any::<bool>()) {
        static MAP: std::sync::OnceLock<(tempfile::TempDir, std::sync::Arc<contexten_codemap::CodeMap>)> = std::sync::OnceLock::new();
        let (_, map) = MAP.get_or_init(|| { let d = repo(); let m = analyse(&d); (d, m) });
        let request = "fix handler_5 and Service7 ".repeat(req_words);
        let ranked = map.query(&Query::new(request.clone(), 8));
        let model = if model_o200k { "gpt-4o" } else { "gpt-3.5-turbo" };
        let p = assemble_prompt(map, &request, &ranked, budget, model);
        prop_assert!(p.tokens <= budget, "{} > {}", p.tokens, budget);
        let (bpe, _) = tokenizer_for(model);
        prop_assert_eq!(bpe.count_ordinary(&p.text), p.tokens);
        if !p.request_truncated {
            prop_assert!(p.text.ends_with(request.as_str()));
        }
    }
}
