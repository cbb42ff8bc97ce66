//! `weft analyze`: Istio's analyzers over files, with `istioctl analyze`'s flags, output and exit
//! codes (0; 79 when a message reaches the failure threshold; 65 when a file cannot be parsed;
//! 64 for a bad flag value).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use weft_api::load::{LoadResult, Severity};
use weft_api::types::mesh::MeshConfig;
use weft_registry::analysis::{self, Analyzer, Context, Level, Message, Suppression};

/// istioctl's exit codes (`istioctl/pkg/cli`'s sysexits-like table).
const EXIT_INCORRECT_USAGE: u8 = 64;
const EXIT_DATA_ERROR: u8 = 65;
const EXIT_FOUND_ISSUES: u8 = 79;

const EXTENSIONS: [&str; 3] = [".json", ".yaml", ".yml"];
const DOCS: &str = "https://istio.io/latest/docs/reference/config/analysis";

#[derive(clap::Args)]
pub struct Args {
    /// Files or folders to analyze (`-` for stdin); folders hold *.yaml, *.yml and *.json files.
    paths: Vec<PathBuf>,
    /// Analyze every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// The namespace of objects that name none, and whose messages are shown (`default`).
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Output format: log, json or yaml.
    #[arg(short = 'o', long = "output", default_value = "log")]
    output: String,
    /// The lowest level of message shown: Info, Warning or Error.
    #[arg(long = "output-threshold", default_value = "Info")]
    output_threshold: String,
    /// The lowest level of message that makes the exit code non-zero (79).
    #[arg(long = "failure-threshold", default_value = "Error")]
    failure_threshold: String,
    /// Suppress a message code on a resource: `CODE=Kind name.namespace` (or `ns/name`); `*`
    /// matches any run of characters. Repeatable.
    #[arg(short = 'S', long = "suppress")]
    suppress: Vec<String>,
    /// Run only this analyzer (istioctl's names, see --list-analyzers). Repeatable.
    #[arg(long = "analyzer")]
    analyzer: Vec<String>,
    /// List the analyzers and exit.
    #[arg(short = 'L', long = "list-analyzers")]
    list_analyzers: bool,
    /// Analyze a live cluster too. Weft has no Kubernetes connection yet: only `false` works.
    #[arg(short = 'k', long = "use-kube", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    use_kube: bool,
    /// Do not fail on input documents that cannot be parsed.
    #[arg(long = "ignore-unknown")]
    ignore_unknown: bool,
    /// The mesh config to analyze with (a MeshConfig YAML file).
    #[arg(long = "meshConfigFile")]
    mesh_config_file: Option<PathBuf>,
    /// Read folders recursively.
    #[arg(short = 'R', long = "recursive")]
    recursive: bool,
}

fn usage(message: String) -> anyhow::Result<ExitCode> {
    eprintln!("Error: {message}");
    Ok(ExitCode::from(EXIT_INCORRECT_USAGE))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let format = args.output.to_ascii_lowercase();
    if !matches!(format.as_str(), "log" | "json" | "yaml") {
        return usage(format!(
            "{} not a valid option for format. See weft analyze --help",
            args.output
        ));
    }
    let (Some(output_threshold), Some(failure_threshold)) = (
        Level::parse(&args.output_threshold),
        Level::parse(&args.failure_threshold),
    ) else {
        return usage(format!(
            "invalid threshold {:?} or {:?}: valid values are [Info Warning Error]",
            args.output_threshold, args.failure_threshold
        ));
    };
    if args.list_analyzers {
        let mut names: Vec<&Analyzer> = analysis::ANALYZERS.iter().collect();
        names.sort_by_key(|a| a.name);
        for a in names {
            println!("* {}:\n    {}", a.name, a.description);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.use_kube {
        return usage(
            "--use-kube: Weft cannot read a live cluster yet; analyze files with --use-kube=false (the default)".into(),
        );
    }
    let mut selected = Vec::new();
    for name in &args.analyzer {
        match analysis::analyzer(name) {
            Some(a) => selected.push(a),
            None => {
                return usage(format!(
                    "unknown analyzer {name:?}; see weft analyze --list-analyzers"
                ));
            }
        }
    }
    let mut suppressions = Vec::new();
    for s in &args.suppress {
        let parsed = match Suppression::parse(s) {
            Ok(p) => p,
            Err(e) => return usage(e),
        };
        if analysis::catalog::by_code(&parsed.code).is_none() {
            eprintln!(
                "Warning: Supplied message code '{}' is an unknown message code and will not have any effect.",
                parsed.code
            );
        }
        suppressions.push(parsed);
    }
    let mesh = match &args.mesh_config_file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            MeshConfig::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
        }
        None => MeshConfig::default(),
    };

    // Files, as istioctl gathers them: only known extensions, folders one level unless -R.
    let mut files: Vec<String> = Vec::new();
    let mut loaded = LoadResult::default();
    for p in &args.paths {
        gather(p, args.recursive, true, &mut files, &mut loaded)?;
    }
    let parse_errors: Vec<String> = loaded
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    if !parse_errors.is_empty() {
        eprintln!("Error(s) adding files: {}", parse_errors.join("\n"));
    }

    let selected_namespace = match (&args.namespace, args.all_namespaces) {
        (_, true) => String::new(),
        (Some(ns), false) => ns.clone(),
        (None, false) => "default".to_string(),
    };
    let target = if args.all_namespaces {
        "all namespaces".to_string()
    } else {
        format!("namespace: {selected_namespace}")
    };
    let mut objects = loaded.objects;
    objects.append(&mut loaded.others);
    // Mesh networks live where istiod reads them: the `meshNetworks` key of the `istio`
    // ConfigMap.
    let mesh_networks = objects.iter().find_map(|o| {
        let weft_api::Resource::ConfigMap(cm) = &o.resource else {
            return None;
        };
        let text = cm.data.as_ref()?.get("meshNetworks")?;
        (cm.metadata.name.as_deref() == Some("istio"))
            .then(|| weft_api::yaml::parse_stream(text).ok())
            .flatten()
            .and_then(|docs| docs.first().map(weft_api::yaml::Node::to_json))
    });
    let mut ctx = Context::new(objects, &selected_namespace, mesh);
    ctx.mesh_networks = mesh_networks;
    let mut messages: Vec<Message> = analysis::analyze(&ctx, &selected);
    messages.retain(|m| {
        (selected_namespace.is_empty()
            || m.resource.namespace.is_empty()
            || m.resource.namespace == selected_namespace)
            && !suppressions.iter().any(|s| s.matches(m))
    });
    let shown: Vec<&Message> = messages
        .iter()
        .filter(|m| m.message_type.level >= output_threshold)
        .collect();

    let mut out = std::io::stdout().lock();
    match format.as_str() {
        "json" => {
            let value = serde_json::Value::Array(shown.iter().map(|m| unstructured(m)).collect());
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&value, &mut ser)?;
            out.write_all(&buf)?;
            writeln!(out)?;
        }
        "yaml" => {
            let value: Vec<serde_json::Value> = shown.iter().map(|m| unstructured(m)).collect();
            write!(out, "{}", serde_saphyr::to_string(&value)?)?;
        }
        _ => {
            let lines: Vec<String> = shown.iter().map(ToString::to_string).collect();
            writeln!(out, "{}", lines.join("\n"))?;
        }
    }
    out.flush()?;
    if shown.is_empty() {
        if parse_errors.is_empty() {
            let what = if files.is_empty() {
                target.clone()
            } else {
                files.join("\n")
            };
            eprintln!("\u{2714} No validation issues found when analyzing {what}.");
        } else {
            let n = parse_errors.len();
            eprintln!(
                "No validation issues found when analyzing {target} (but {n} {} could not be parsed).",
                if n == 1 { "file" } else { "files" }
            );
        }
    }
    // As istioctl: the exit code follows the messages before the output threshold, and only
    // for the log format.
    if format == "log" {
        if messages
            .iter()
            .any(|m| m.message_type.level >= failure_threshold)
        {
            eprintln!(
                "Error: Analyzers found issues when analyzing {target}.\nSee {DOCS} for more information about causes and resolutions."
            );
            return Ok(ExitCode::from(EXIT_FOUND_ISSUES));
        }
        if !parse_errors.is_empty() && !args.ignore_unknown {
            eprintln!("Error: Some files couldn't be parsed.");
            return Ok(ExitCode::from(EXIT_DATA_ERROR));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// istioctl's JSON and YAML form of a message (`diag.Message.Unstructured`).
fn unstructured(m: &Message) -> serde_json::Value {
    let mut o = BTreeMap::new();
    o.insert("code", m.message_type.code.to_string());
    o.insert("level", m.message_type.level.as_str().to_string());
    o.insert("origin", m.resource.to_string());
    if let Some(r) = &m.reference {
        o.insert("reference", r.clone());
    }
    o.insert("message", m.text.clone());
    o.insert(
        "documentationUrl",
        format!(
            "{DOCS}/{}/?ref=istioctl-analyze",
            m.message_type.code.to_ascii_lowercase()
        ),
    );
    serde_json::to_value(o).unwrap_or_default()
}

/// Reads `p` into `loaded`: stdin for `-`, a file with a known extension, or a folder's files
/// (its subfolders only when `recursive`). Other files are skipped with istioctl's notice.
fn gather(
    p: &Path,
    recursive: bool,
    top: bool,
    files: &mut Vec<String>,
    loaded: &mut LoadResult,
) -> anyhow::Result<()> {
    if p.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        loaded.load_str("-", &text);
        files.push("-".into());
        return Ok(());
    }
    let meta = std::fs::metadata(p).map_err(|e| anyhow::anyhow!("stat {}: {e}", p.display()))?;
    if meta.is_dir() {
        if !top && !recursive {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            gather(&e, recursive, false, files, loaded)?;
        }
        return Ok(());
    }
    let shown = p.display().to_string();
    if !EXTENSIONS.iter().any(|x| shown.ends_with(x)) {
        eprintln!(
            "Skipping file {shown}, recognized file extensions are: [{}]",
            EXTENSIONS.join(" ")
        );
        return Ok(());
    }
    loaded.load_path(p);
    files.push(shown);
    Ok(())
}
