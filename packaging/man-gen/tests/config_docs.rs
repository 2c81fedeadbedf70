//! Checks that the packaged configuration file and chorusd.toml(5) keep step with the broker's
//! `Config`: every key must appear in both, and every stated default must be the real one.
//!
//! The keys come from tracing `Config`'s Deserialize impl with serde-reflection, so optional
//! keys count too; the defaults come from serialising `Config::default()`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chorus_broker::Config;
use serde_reflection::{ContainerFormat, Format, Registry, Samples, Tracer, TracerConfig};
use toml::{Table, Value};

/// A leaf key of the configuration.
#[derive(Debug)]
struct Key {
    /// Dotted path of the table that contains the key, empty for the top level.
    table: String,
    /// Whether the table is an array of tables, such as `[[storage.topics]]`.
    array: bool,
    name: String,
    /// Value in `Config::default()`: `None` for an unset optional key, and for keys of an array
    /// of tables, which has no default entries.
    default: Option<Value>,
}

impl Key {
    fn path(&self) -> String {
        if self.table.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.table, self.name)
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn packaged_config_path() -> PathBuf {
    repo_root().join("packaging/chorusd.toml")
}

fn read_repo_file(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Traces the formats of `Config` and every type inside it.
fn config_registry() -> Registry {
    // Strings that validate on deserialisation (such as topic patterns) reject the empty string
    // that the tracer offers by default.
    let config = TracerConfig::default()
        .default_string_value("x".to_owned())
        .default_borrowed_str_value("x");
    let mut tracer = Tracer::new(config);
    let samples = Samples::new();
    tracer
        .trace_type::<Config>(&samples)
        .expect("tracing Config's Deserialize impl");
    tracer.registry_unchecked()
}

/// Returns the struct that a field's format nests as a TOML table, and whether it is an array
/// of tables.
fn nested_struct<'a>(format: &'a Format, registry: &Registry) -> Option<(&'a str, bool)> {
    match format {
        Format::TypeName(name) => match registry.get(name) {
            Some(ContainerFormat::Struct(_)) => Some((name.as_str(), false)),
            _ => None,
        },
        Format::Option(inner) => nested_struct(inner, registry),
        Format::Seq(inner) => nested_struct(inner, registry).map(|(name, _)| (name, true)),
        _ => None,
    }
}

fn collect_keys(
    registry: &Registry,
    container: &str,
    (table, array): (&str, bool),
    defaults: Option<&Table>,
    keys: &mut Vec<Key>,
) {
    let Some(ContainerFormat::Struct(fields)) = registry.get(container) else {
        panic!("{container} is not traced as a struct");
    };
    for field in fields {
        let default = defaults.and_then(|table| table.get(&field.name));
        if let Some((nested, nested_array)) = nested_struct(&field.value, registry) {
            let path = if table.is_empty() {
                field.name.clone()
            } else {
                format!("{table}.{}", field.name)
            };
            let nested_defaults = default.and_then(Value::as_table);
            collect_keys(
                registry,
                nested,
                (&path, nested_array),
                nested_defaults,
                keys,
            );
        } else {
            keys.push(Key {
                table: table.to_owned(),
                array,
                name: field.name.clone(),
                default: default.cloned(),
            });
        }
    }
}

/// Lists every leaf key of the configuration with its default.
fn config_keys() -> Vec<Key> {
    let registry = config_registry();
    let Value::Table(defaults) = Value::try_from(Config::default()).unwrap() else {
        panic!("Config does not serialise to a table");
    };
    let mut keys = Vec::new();
    collect_keys(&registry, "Config", ("", false), Some(&defaults), &mut keys);
    keys
}

fn packaged_table() -> Table {
    read_repo_file("packaging/chorusd.toml").parse().unwrap()
}

fn lookup<'a>(table: &'a Table, key: &Key) -> Option<&'a Value> {
    let mut current = table;
    for part in key.table.split('.').filter(|part| !part.is_empty()) {
        current = current.get(part)?.as_table()?;
    }
    current.get(&key.name)
}

/// Returns each (table, key) that the packaged file sets or shows commented out, such as
/// `# cert_file = "..."`, under a table header that may itself be commented out.
fn packaged_key_lines(text: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches('#').trim();
        if let Some(inner) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            table = inner.to_owned();
        } else if let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = inner.to_owned();
        } else if let Some((name, _)) = line.split_once('=') {
            let name = name.trim();
            let is_key_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            if !name.is_empty() && name.chars().all(is_key_char) {
                found.insert((table.clone(), name.to_owned()));
            }
        }
    }
    found
}

#[test]
fn config_has_keys_to_check() {
    let keys = config_keys();
    assert!(keys.len() >= 10, "only {} keys found: {keys:?}", keys.len());
}

#[test]
fn packaged_config_loads_and_validates() {
    let config = Config::from_file(&packaged_config_path()).unwrap();
    config.validate().unwrap();
    config.log_config().validate().unwrap();
}

#[test]
fn packaged_config_uses_state_directory() {
    let config = Config::from_file(&packaged_config_path()).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/chorus"));
}

#[test]
fn packaged_config_listens_on_loopback() {
    let config = Config::from_file(&packaged_config_path()).unwrap();
    let expected: Vec<SocketAddr> = vec!["127.0.0.1:7400".parse().unwrap()];
    assert_eq!(config.listen, expected);
}

#[test]
fn packaged_config_shows_every_key() {
    let shown = packaged_key_lines(&read_repo_file("packaging/chorusd.toml"));
    let missing: Vec<String> = config_keys()
        .iter()
        .filter(|key| !shown.contains(&(key.table.clone(), key.name.clone())))
        .map(Key::path)
        .collect();
    assert!(
        missing.is_empty(),
        "packaging/chorusd.toml lacks {missing:?}"
    );
}

#[test]
fn packaged_config_values_are_defaults() {
    let table = packaged_table();
    for key in config_keys() {
        if key.path() == "data_dir" || key.array {
            continue;
        }
        let Some(value) = lookup(&table, &key) else {
            continue;
        };
        assert_eq!(
            Some(value),
            key.default.as_ref(),
            "packaging/chorusd.toml sets {} to a value other than its default",
            key.path()
        );
    }
}

/// Returns the heading of the man page section that documents the keys of a table.
fn section_heading(key: &Key) -> String {
    if key.table.is_empty() {
        ".SH \"TOP\\-LEVEL KEYS\"".to_owned()
    } else if key.array {
        format!(".SH \"[[{}]] TABLES\"", key.table)
    } else {
        format!(".SH \"[{}] TABLE\"", key.table)
    }
}

/// Removes the roff escapes and font changes that the page uses inside key names and values.
fn plain(roff: &str) -> String {
    let mut text = roff.replace("\\-", "-").replace("\\(dq", "\"");
    for escape in ["\\&", "\\%", "\\fB", "\\fI", "\\fR", "\\fP"] {
        text = text.replace(escape, "");
    }
    text
}

/// Returns the `.TP` entries of one section that are not nested inside `.RS`/`.RE`: each key
/// name with the lines between its `.B name` line and the `.IP` that starts its description.
fn page_entries(page: &str, heading: &str) -> Vec<(String, Vec<String>)> {
    let mut lines = page.lines().skip_while(|line| *line != heading);
    assert!(
        lines.next().is_some(),
        "chorusd.toml.5 has no section {heading}"
    );

    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    let mut depth = 0;
    let mut after_tp = false;
    let mut in_header = false;
    for line in lines.take_while(|line| !line.starts_with(".SH")) {
        match line {
            ".RS" => depth += 1,
            ".RE" => depth -= 1,
            _ => {}
        }
        if depth == 0 && after_tp {
            if let Some(name) = line.strip_prefix(".B ") {
                entries.push((plain(name), Vec::new()));
                in_header = true;
            }
        } else if in_header && (line.starts_with(".IP") || line.starts_with(".TP")) {
            in_header = false;
        } else if in_header {
            if let Some((_, header)) = entries.last_mut() {
                header.push(plain(line));
            }
        }
        after_tp = depth == 0 && line == ".TP";
    }
    entries
}

#[test]
fn man_page_documents_every_key() {
    let page = read_repo_file("man/chorusd.toml.5");
    let mut missing = Vec::new();
    for key in config_keys() {
        let entries = page_entries(&page, &section_heading(&key));
        if !entries.iter().any(|(name, _)| *name == key.name) {
            missing.push(key.path());
        }
    }
    assert!(missing.is_empty(), "chorusd.toml.5 lacks {missing:?}");
}

#[test]
fn man_page_documents_no_unknown_key() {
    let page = read_repo_file("man/chorusd.toml.5");
    let keys = config_keys();
    let headings: BTreeSet<String> = keys.iter().map(section_heading).collect();
    let mut unknown = Vec::new();
    for heading in headings {
        for (name, _) in page_entries(&page, &heading) {
            if !keys
                .iter()
                .any(|key| section_heading(key) == heading && key.name == name)
            {
                unknown.push(format!("{heading}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "chorusd.toml.5 documents keys Config lacks: {unknown:?}"
    );
}

#[test]
fn man_page_states_every_default() {
    let page = read_repo_file("man/chorusd.toml.5");
    for key in config_keys().iter().filter(|key| !key.array) {
        let entries = page_entries(&page, &section_heading(key));
        let Some((_, header)) = entries.iter().find(|(name, _)| *name == key.name) else {
            continue; // reported by man_page_documents_every_key
        };
        // Defaults that contain the version, such as relay.client_name, show it as "version".
        let expected = match &key.default {
            Some(value) => {
                format!("Default: {value}").replace(env!("CARGO_PKG_VERSION"), "version")
            }
            None => "Default: none".to_owned(),
        };
        let stated = header
            .iter()
            .find_map(|line| line.find("Default: ").map(|i| &line[i..]));
        let Some(stated) = stated else {
            panic!(
                "chorusd.toml.5: {} states no default; expected {expected}",
                key.path()
            );
        };
        let rest = stated.strip_prefix(&expected).unwrap_or_else(|| {
            panic!(
                "chorusd.toml.5: {} states {stated:?}, expected {expected}",
                key.path()
            )
        });
        assert!(
            rest.is_empty() || rest.starts_with([' ', ',', ';']),
            "chorusd.toml.5: {} states {stated:?}, expected {expected}",
            key.path()
        );
    }
}
