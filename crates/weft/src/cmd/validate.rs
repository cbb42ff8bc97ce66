//! `weft validate`: load, type-check and validate Istio configuration.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use weft_api::load::{LoadResult, Loaded, Problem, Severity};
use weft_api::types::mesh::MeshConfig;
use weft_api::validate::check_loaded;
use weft_registry::references;

#[derive(clap::Args)]
pub struct Args {
    /// Files or folders to read (folders recursively: *.yaml, *.yml, *.json); `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    /// Treat fields the schema does not know as errors (by default they are warnings, as the
    /// Kubernetes API server prunes them with a warning).
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// The outcome of validating a set of inputs.
pub struct Report {
    pub problems: Vec<Problem>,
    pub counts: BTreeMap<String, usize>,
    pub objects: usize,
    pub skipped: Vec<(String, String, usize)>,
    pub not_objects: Vec<(String, String)>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }
}

pub fn check(files: &[PathBuf], strict: bool) -> Report {
    let mut loaded = LoadResult::default();
    for f in files {
        loaded.load_path(f);
    }
    let mut problems = std::mem::take(&mut loaded.problems);
    let mut counts = BTreeMap::new();
    let mut valid = Vec::new();
    for obj in &loaded.objects {
        let found = check_loaded(obj, strict);
        if !found.iter().any(|p| p.severity == Severity::Error) {
            valid.push(obj);
        }
        problems.extend(found);
        // Gateway API's Gateway shares its kind name with Istio's.
        let label = match &obj.resource {
            weft_api::Resource::GatewayApi(o) => format!("{} (Gateway API)", o.kind),
            r => r.kind().to_string(),
        };
        *counts.entry(label).or_insert(0) += 1;
    }
    // What only the objects together show, in the words `weft up` uses for it.
    let duplicates = references::duplicates(&valid);
    let dropped: Vec<usize> = duplicates.iter().map(|(i, _)| *i).collect();
    // Files checked together need not be one folder of config (`-f` of Istio's samples holds
    // alternatives of one object): here a duplicate is a warning; `weft up` refuses it.
    problems.extend(duplicates.into_iter().map(|(_, p)| Problem {
        severity: Severity::Warning,
        ..p
    }));
    let valid: Vec<&Loaded> = valid
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, o)| o)
        .collect();
    problems.extend(references::missing(&valid));
    // `istioctl analyze`'s findings, as `weft up` reports them.
    let found = weft_registry::analysis::live_problems(&valid, &MeshConfig::default());
    problems.extend(found);
    problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Report {
        problems,
        counts,
        objects: loaded.objects.len(),
        skipped: loaded
            .skipped
            .iter()
            .map(|((v, k), o)| (v.clone(), k.clone(), o.len()))
            .collect(),
        not_objects: loaded
            .not_objects
            .iter()
            .map(|(o, what)| (o.to_string(), what.clone()))
            .collect(),
    }
}

#[derive(Serialize)]
struct JsonProblem<'a> {
    severity: &'static str,
    file: &'a str,
    line: u32,
    document: usize,
    kind: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    path: Option<String>,
    message: &'a str,
}

#[derive(Serialize)]
struct JsonSkipped<'a> {
    api_version: &'a str,
    kind: &'a str,
    count: usize,
}

#[derive(Serialize)]
struct JsonNotObject<'a> {
    at: &'a str,
    what: &'a str,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    objects: usize,
    counts: &'a BTreeMap<String, usize>,
    errors: Vec<JsonProblem<'a>>,
    warnings: Vec<JsonProblem<'a>>,
    skipped: Vec<JsonSkipped<'a>>,
    not_objects: Vec<JsonNotObject<'a>>,
}

fn json_problem(p: &Problem) -> JsonProblem<'_> {
    JsonProblem {
        severity: match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        file: &p.file,
        line: p.line,
        document: p.document,
        kind: p.object.as_ref().map(|o| o.kind.as_str()),
        namespace: p.object.as_ref().map(|o| o.namespace.as_str()),
        name: p.object.as_ref().map(|o| o.name.as_str()),
        path: p
            .path
            .as_ref()
            .filter(|p| !p.is_root())
            .map(ToString::to_string),
        message: &p.message,
    }
}

pub fn summary(r: &Report) -> String {
    let kinds: Vec<String> = r.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} objects valid ({})", r.objects, kinds.join(", "))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let report = check(&args.files, args.strict);
    let errors = report.errors();
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            let j = JsonReport {
                valid: errors == 0,
                objects: report.objects,
                counts: &report.counts,
                errors: report
                    .problems
                    .iter()
                    .filter(|p| p.severity == Severity::Error)
                    .map(json_problem)
                    .collect(),
                warnings: report
                    .problems
                    .iter()
                    .filter(|p| p.severity == Severity::Warning)
                    .map(json_problem)
                    .collect(),
                skipped: report
                    .skipped
                    .iter()
                    .map(|(v, k, n)| JsonSkipped {
                        api_version: v,
                        kind: k,
                        count: *n,
                    })
                    .collect(),
                not_objects: report
                    .not_objects
                    .iter()
                    .map(|(at, what)| JsonNotObject { at, what })
                    .collect(),
            };
            serde_json::to_writer_pretty(&mut out, &j)?;
            writeln!(out)?;
        }
        Format::Text => {
            let mut err = std::io::stderr().lock();
            for p in &report.problems {
                match p.severity {
                    Severity::Error => writeln!(out, "{p}")?,
                    Severity::Warning => writeln!(err, "{p}")?,
                }
            }
            for (v, k, n) in &report.skipped {
                writeln!(err, "skipped {n} {k} ({v}): not a kind Weft reads")?;
            }
            for (at, what) in &report.not_objects {
                writeln!(err, "skipped {at}: not a Kubernetes object ({what})")?;
            }
            if errors == 0 {
                writeln!(out, "{}", summary(&report))?;
            } else {
                let plural =
                    |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
                writeln!(
                    out,
                    "{} in {}",
                    plural(errors, "error"),
                    plural(report.objects, "object")
                )?;
            }
        }
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
