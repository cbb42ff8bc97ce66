//! Fixture-driven tests: every seed example and every invalid fixture, with the outcome its
//! header states. A header line is one of:
//!
//! ```text
//! # expect: valid                       no errors, at least one object
//! # expect-error: L12 spec.http[0]: msg  an error on line 12 at that path (`-`: none) whose
//!                                        message contains msg
//! # expect-warning: L12 path: msg        the same, as a warning
//! # expect-strict-error: L12 path: msg   an error only with --strict
//! # expect-skipped: Kind                 an object of a kind Weft does not read
//! # expect-not-object                    a document that is not a Kubernetes object
//! ```
//!
//! Errors must match the expectations exactly: an unexpected extra error fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic

use std::path::{Path, PathBuf};

use weft_api::load::{LoadResult, Problem, Severity};
use weft_api::validate::check_loaded;

#[derive(Debug)]
struct Expect {
    severity: Severity,
    strict: bool,
    line: u32,
    path: String,
    message: String,
}

#[derive(Debug, Default)]
struct Header {
    valid: bool,
    problems: Vec<Expect>,
    skipped: Vec<String>,
    not_object: bool,
}

fn parse_header(text: &str, file: &Path) -> Header {
    let mut h = Header::default();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let Some(rest) = line.strip_prefix("# expect") else {
            continue;
        };
        if rest == ": valid" {
            h.valid = true;
        } else if rest == "-not-object" {
            h.not_object = true;
        } else if let Some(kind) = rest.strip_prefix("-skipped: ") {
            h.skipped.push(kind.trim().to_string());
        } else {
            let (severity, strict, spec) = if let Some(s) = rest.strip_prefix("-error: ") {
                (Severity::Error, false, s)
            } else if let Some(s) = rest.strip_prefix("-warning: ") {
                (Severity::Warning, false, s)
            } else if let Some(s) = rest.strip_prefix("-strict-error: ") {
                (Severity::Error, true, s)
            } else {
                panic!("{}: unreadable expectation {line:?}", file.display());
            };
            let (line_no, rest) = spec.split_once(' ').expect("L<line> <path>: <message>");
            let (path, message) = rest.split_once(": ").expect("<path>: <message>");
            h.problems.push(Expect {
                severity,
                strict,
                line: line_no
                    .trim_start_matches('L')
                    .parse()
                    .expect("line number"),
                path: path.to_string(),
                message: message.to_string(),
            });
        }
    }
    h
}

fn matches(e: &Expect, p: &Problem) -> bool {
    let path = p
        .path
        .as_ref()
        .filter(|x| !x.is_root())
        .map_or("-".to_string(), ToString::to_string);
    // An error on an object's root is written as its spec or object path in headers.
    let path_ok = path == e.path || (e.path == "-" && p.path.as_ref().is_none_or(|x| x.is_root()));
    p.severity == e.severity && p.line == e.line && path_ok && p.message.contains(&e.message)
}

fn run(file: &Path, strict: bool) -> (LoadResult, Vec<Problem>) {
    let mut r = LoadResult::default();
    r.load_path(file);
    let mut problems = std::mem::take(&mut r.problems);
    for o in &r.objects {
        problems.extend(check_loaded(o, strict));
    }
    (r, problems)
}

fn check_fixture(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let h = parse_header(&text, file);
    let (loaded, problems) = run(file, false);
    let show = |ps: &[Problem]| ps.iter().map(|p| format!("\n    {p}")).collect::<String>();
    // Every problem the tool reports must name the file, and an object's problem its kind.
    for p in &problems {
        if p.file != file.display().to_string() || p.line == 0 {
            return Err(format!("problem without file and line: {p}"));
        }
    }
    for e in h.problems.iter().filter(|e| !e.strict) {
        if !problems.iter().any(|p| matches(e, p)) {
            return Err(format!("expected {e:?}, got:{}", show(&problems)));
        }
    }
    let unexpected: Vec<Problem> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .filter(|p| !h.problems.iter().any(|e| !e.strict && matches(e, p)))
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(format!("unexpected errors:{}", show(&unexpected)));
    }
    if h.valid && loaded.objects.is_empty() {
        return Err("expected at least one valid object".into());
    }
    let strict: Vec<&Expect> = h.problems.iter().filter(|e| e.strict).collect();
    if !strict.is_empty() {
        let (_, sp) = run(file, true);
        for e in strict {
            if !sp.iter().any(|p| matches(e, p)) {
                return Err(format!("expected with --strict {e:?}, got:{}", show(&sp)));
            }
        }
    }
    for k in &h.skipped {
        if !loaded.skipped.keys().any(|(_, kind)| kind == k) {
            return Err(format!("expected {k} to be skipped"));
        }
    }
    if h.not_object == loaded.not_objects.is_empty() {
        return Err(format!(
            "not-object expectation {} but found {:?}",
            h.not_object, loaded.not_objects
        ));
    }
    if !h.valid && h.problems.is_empty() && h.skipped.is_empty() && !h.not_object {
        return Err("fixture states no expectation".into());
    }
    Ok(())
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn check_all(dir: &str) -> usize {
    let files = fixtures(dir);
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            check_fixture(f)
                .err()
                .map(|e| format!("{}: {e}", f.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    files.len()
}

#[test]
fn seed_examples_behave_as_stated() {
    assert!(check_all("seeds") >= 30);
}

#[test]
fn invalid_fixtures_are_rejected_at_the_expected_field() {
    let n = check_all("invalid");
    assert!(n >= 200, "only {n} invalid fixtures");
    for f in fixtures("invalid") {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("# expect-error: ")
                    || l.starts_with("# expect-strict-error: ")),
            "{}: an invalid fixture must expect an error",
            f.display()
        );
    }
}

#[test]
fn warnings_are_reported_without_rejecting() {
    let n = check_all("warnings");
    assert!(n >= 10, "only {n} warning fixtures");
}

/// The fixtures were extracted from the seed documents; this keeps them complete: every YAML
/// example in `../shared/seeds` (fenced YAML, fenced blocks with an apiVersion, and heredocs in
/// shell blocks) must be one of the fixtures, byte for byte.
#[test]
fn every_seed_example_is_a_fixture() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seeds");
    let bodies: Vec<String> = fixtures("seeds")
        .iter()
        .map(|f| {
            let t = std::fs::read_to_string(f).unwrap();
            t.lines()
                .skip_while(|l| l.starts_with("# seed:") || l.starts_with("# expect"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut found = 0;
    for seed in entries {
        let text = std::fs::read_to_string(&seed).unwrap();
        for block in seed_yaml_blocks(&text) {
            found += 1;
            assert!(
                bodies.iter().any(|b| b.trim_end() == block.trim_end()),
                "{}: example not among the fixtures:\n{block}",
                seed.display()
            );
        }
    }
    assert_eq!(
        found,
        bodies.len(),
        "fixtures and seed examples differ in number"
    );
}

fn seed_yaml_blocks(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let quoted = raw.starts_with('>');
        let l = if quoted {
            raw.trim_start_matches('>')
                .strip_prefix(' ')
                .unwrap_or(raw.trim_start_matches('>'))
        } else {
            raw
        };
        let t = l.trim();
        if let Some(lang) = t.strip_prefix("```") {
            let lang = lang.trim();
            let mut body = Vec::new();
            let mut j = i + 1;
            while j < lines.len() {
                let r = lines[j];
                let r = if quoted {
                    r.strip_prefix("> ")
                        .or_else(|| r.strip_prefix('>'))
                        .unwrap_or(r)
                } else {
                    r
                };
                if r.trim().starts_with("```") {
                    break;
                }
                body.push(r);
                j += 1;
            }
            let joined = body.join("\n");
            if matches!(lang, "yaml" | "yml") || (lang.is_empty() && joined.contains("apiVersion:"))
            {
                out.push(joined);
            } else if matches!(lang, "shell" | "bash" | "sh") {
                let mut k = 0;
                while k < body.len() {
                    if body[k].trim_end().ends_with("<<EOF")
                        || body[k].trim_end().ends_with("<< EOF")
                    {
                        let end = body[k + 1..]
                            .iter()
                            .position(|b| b.trim() == "EOF")
                            .map_or(body.len(), |p| k + 1 + p);
                        out.push(body[k + 1..end].join("\n"));
                        k = end;
                    }
                    k += 1;
                }
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}
