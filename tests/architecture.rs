//! The architecture invariants that can be checked by reading the code: no import cycle
//! between the modules of a crate (sibling modules, at every depth), sled only in the
//! controller's store, rdkafka linked only by the worker and the bench, the crates that must
//! not depend on the engine not depending on it. Fast: files are read, nothing is built.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {dir:?}: {e}")) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A crate's modules by path (`[]` for the crate root), with their code: comments and the
/// inline test module left out.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            (module, code)
        })
        .collect()
}

/// The module paths `code` (in `module`) names through `crate::` and `super::`.
fn references(module: &Module, code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut path = base.clone();
            let mut words = rest;
            loop {
                let end = words
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(words.len());
                let word = &words[..end];
                if word.is_empty() || !word.starts_with(|c: char| c.is_ascii_lowercase()) {
                    break;
                }
                path.push(word.to_string());
                match words[end..].strip_prefix("::") {
                    Some(next) => words = next,
                    None => break,
                }
            }
            out.push(path);
        }
    }
    out
}

/// Pairs of sibling modules that reach each other, directly or through siblings.
fn cycles(src: &Path) -> Vec<String> {
    let modules = modules(src);
    let known: BTreeSet<&Module> = modules.keys().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in &modules {
        for depth in 1..=module.len() {
            let from = module[..depth].to_vec();
            for reference in references(module, code) {
                let Some(target) = (1..=reference.len())
                    .rev()
                    .map(|k| reference[..k].to_vec())
                    .find(|m| known.contains(m))
                else {
                    continue;
                };
                if target.len() < depth {
                    continue;
                }
                let to = target[..depth].to_vec();
                if to != from && to[..depth - 1] == from[..depth - 1] {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    let reaches = |start: &Module, goal: &Module| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(m) = stack.pop() {
            if &m == goal {
                return true;
            }
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let mut found = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if from < to && reaches(to, from) {
                found.push(format!("{} <-> {}", from.join("::"), to.join("::")));
            }
        }
    }
    found
}

fn crates() -> Vec<PathBuf> {
    let root = root();
    let mut crates: Vec<PathBuf> = [
        "proto",
        "data",
        "model",
        "connector-sdk",
        "worker",
        "conformance",
        "controller",
        "cli",
        "bench",
    ]
    .iter()
    .map(|c| root.join(c))
    .collect();
    for entry in std::fs::read_dir(root.join("connectors")).unwrap() {
        let path = entry.unwrap().path();
        if path.join("Cargo.toml").exists() {
            crates.push(path);
        }
    }
    crates
}

#[test]
fn no_import_cycle_between_the_modules_of_a_crate() {
    let mut found = Vec::new();
    for krate in crates() {
        for cycle in cycles(&krate.join("src")) {
            found.push(format!("{}: {cycle}", krate.display()));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod x;\nuse crate::b::B;\n").unwrap();
    std::fs::write(src.join("a/x.rs"), "use super::y; // not a module\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub fn f() { crate::a::x::g() }\n").unwrap();
    assert_eq!(cycles(src), ["a <-> b"]);
    std::fs::write(src.join("b.rs"), "// crate::a::x::g()\n").unwrap();
    assert!(cycles(src).is_empty());
}

/// The `[dependencies]` of a crate's manifest, by name.
fn dependencies(krate: &Path) -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    let mut in_deps = false;
    let mut deps = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.starts_with('#') {
            if let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| !n.is_empty()) {
                deps.insert(name.to_string());
            }
        }
    }
    deps
}

#[test]
fn crates_depend_only_where_the_architecture_allows() {
    let root = root();
    for krate in crates() {
        let name = krate.strip_prefix(&root).unwrap().display().to_string();
        let deps = dependencies(&krate);
        if deps.contains("rdkafka") {
            assert!(
                ["worker", "bench"].contains(&name.as_str()),
                "{name} links rdkafka: only the worker (and the bench) may"
            );
        }
        if deps.contains("sled") {
            assert_eq!(
                name, "controller",
                "only the controller keeps state in sled"
            );
        }
        let engine = ["sluice-worker", "sluice-controller"];
        if name == "connector-sdk" || name == "model" || name.starts_with("connectors/") {
            for dep in engine {
                assert!(!deps.contains(dep), "{name} depends on {dep}");
            }
        }
        if name == "model" {
            let ours: Vec<_> = deps.iter().filter(|d| d.starts_with("sluice-")).collect();
            assert_eq!(
                ours,
                ["sluice-data", "sluice-proto"],
                "model's own dependencies"
            );
        }
    }
    let mut files = Vec::new();
    rust_files(&root.join("controller/src"), &mut files);
    for file in files {
        let code = std::fs::read_to_string(&file).unwrap();
        if code.contains("sled::") {
            assert!(
                file.ends_with("store.rs"),
                "{} touches sled: only store.rs may",
                file.display()
            );
        }
    }
}
