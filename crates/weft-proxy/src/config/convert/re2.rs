//! What RE2 (Envoy's regex engine) refuses and Rust's regex crate takes. Envoy NACKs such a
//! pattern, so the proxy must too. weft-api's `validate::rules` holds the same walk for Istio's
//! validation (Go's regexp has RE2's limit); the two crates share no dependency to put it in.

use super::{FieldError, Result};

/// What RE2 refuses and Rust's regex crate takes: Envoy NACKs such a pattern, so must we.
pub(crate) fn re2_limits(re: &str, path: &str) -> Result<()> {
    match re2_repetition_error(re) {
        Some(rep) => Err(FieldError::new(
            path,
            format!(
                "invalid regex {re:?}: invalid repetition size: {rep} (RE2 allows 1000, counts of nested repetitions multiplied)"
            ),
        )),
        None => Ok(()),
    }
}

/// RE2's repetition limit (Envoy's regex engine, and Go's, which Istio validates with): no
/// counted repetition above 1000, nor nested ones whose counts multiply past 1000 (RE2's
/// RepetitionWalker). Returns the repetition that breaks it, as written.
fn re2_repetition_error(re: &str) -> Option<String> {
    use regex_syntax::ast::{Ast, RepetitionKind, RepetitionRange};
    const MAX_REPEAT: u32 = 1000;
    fn walk(ast: &Ast, budget: u32, re: &str) -> Option<String> {
        match ast {
            Ast::Repetition(r) => {
                let count = match &r.op.kind {
                    RepetitionKind::Range(RepetitionRange::Exactly(n))
                    | RepetitionKind::Range(RepetitionRange::AtLeast(n)) => *n,
                    RepetitionKind::Range(RepetitionRange::Bounded(_, n)) => *n,
                    _ => return walk(&r.ast, budget, re),
                };
                let written = || {
                    re.get(r.span.start.offset..r.span.end.offset)
                        .unwrap_or("")
                        .to_string()
                };
                if count > MAX_REPEAT {
                    return Some(written());
                }
                let left = budget.checked_div(count).unwrap_or(budget);
                if left == 0 {
                    return Some(written());
                }
                walk(&r.ast, left, re)
            }
            Ast::Group(g) => walk(&g.ast, budget, re),
            Ast::Alternation(a) => a.asts.iter().find_map(|x| walk(x, budget, re)),
            Ast::Concat(c) => c.asts.iter().find_map(|x| walk(x, budget, re)),
            _ => None,
        }
    }
    let ast = regex_syntax::ast::parse::Parser::new().parse(re).ok()?;
    walk(&ast, MAX_REPEAT, re)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_repetitions_past_re2s_limit_are_refused() {
        for ok in [
            "a{1000}",
            "a{2,1000}",
            "(a{2}){500}",
            "(ab|c){10}x{100}",
            "a*b+c?",
            "[a-z]{3,}",
        ] {
            assert_eq!(re2_repetition_error(ok), None, "{ok}");
        }
        assert_eq!(
            re2_repetition_error("(a|b){2000}").as_deref(),
            Some("(a|b){2000}")
        );
        assert_eq!(
            re2_repetition_error("a{1001,}").as_deref(),
            Some("a{1001,}")
        );
        // Nested counts multiply: RE2 refuses 2 x 501 although each is under 1000.
        assert_eq!(re2_repetition_error("(a{2}){501}").as_deref(), Some("a{2}"));
        let err = re2_limits("/v[0-9]{5000}", "route.match.safe_regex.regex")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("route.match.safe_regex.regex"), "{err}");
        assert!(err.contains("{5000}"), "{err}");
    }
}
