//! The source tree's shape, as issue 23 set it: configuration lies on no
//! import cycle (it is read by every stage, so a stage it imported could
//! never be changed alone), and no source file is over 800 lines.
//!
//! The import graph is by file: an edge for every `crate::`, `super::` and
//! `self::` path and every path through a child module a file declares,
//! resolved to the file that defines the item (through re-exports to the
//! child that defines it). Code after `#[cfg(test)]` is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

fn src_files() -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.insert(p, text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

struct Tree {
    root: PathBuf,
    files: BTreeMap<PathBuf, String>,
}

impl Tree {
    /// A file's module path: src/a/b.rs and src/a/b/mod.rs are [a, b].
    fn module(&self, file: &Path) -> Vec<String> {
        let rel = file.strip_prefix(&self.root).unwrap().with_extension("");
        let mut m: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into()).collect();
        if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
            m.pop();
        }
        m
    }

    fn file_of(&self, module: &[String]) -> Option<PathBuf> {
        if module.is_empty() {
            return Some(self.root.join("lib.rs"));
        }
        let base = module.iter().fold(self.root.clone(), |p, s| p.join(s));
        [base.with_extension("rs"), base.join("mod.rs")]
            .into_iter()
            .find(|p| self.files.contains_key(p))
    }

    /// The file that defines what `path` names: the longest module prefix
    /// that is a file, or the child of it that defines the item.
    fn resolve(&self, path: &[String]) -> Option<PathBuf> {
        (0..=path.len()).rev().find_map(|k| {
            let file = self.file_of(&path[..k])?;
            let Some(item) = path.get(k) else {
                return Some(file);
            };
            let defines = Regex::new(&format!(
                r"\b(struct|enum|fn|trait|type|const|static|mod)\s+{item}\b"
            ))
            .unwrap();
            if defines.is_match(code(&self.files[&file])) {
                return Some(file);
            }
            let dir = if file.ends_with("mod.rs") || file.ends_with("lib.rs") {
                file.parent().unwrap().to_path_buf()
            } else {
                file.with_extension("")
            };
            let child = self
                .files
                .iter()
                .find(|(p, text)| p.starts_with(&dir) && defines.is_match(code(text)));
            Some(child.map_or(file, |(p, _)| p.clone()))
        })
    }

    fn imports(&self, file: &Path) -> BTreeSet<PathBuf> {
        let text: String = code(&self.files[file])
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let me = self.module(file);
        let kids: Vec<String> = Regex::new(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")
            .unwrap()
            .captures_iter(&text)
            .map(|c| c[1].to_string())
            .collect();
        let mut heads = vec!["crate".to_string(), "super".into(), "self".into()];
        heads.extend(kids.iter().cloned());
        let path = Regex::new(&format!(
            r"(?:^|[^\w:])({})((?:::\w+)*)(?:::\{{([^}}]*)\}})?",
            heads.join("|")
        ))
        .unwrap();
        let mut out = BTreeSet::new();
        for c in path.captures_iter(&text) {
            if c[2].is_empty() && c.get(3).is_none() {
                continue; // a word, not a path (`&self`, "crate" in a string)
            }
            let mut base: Vec<String> = match &c[1] {
                "crate" => vec![],
                "super" => me[..me.len().saturating_sub(1)].to_vec(),
                "self" => me.clone(),
                kid => [me.clone(), vec![kid.to_string()]].concat(),
            };
            base.extend(c[2].split("::").filter(|s| !s.is_empty()).map(String::from));
            while base.first().is_some_and(|s| s == "super") {
                base.remove(0);
            }
            let tails: Vec<Vec<String>> = match c.get(3) {
                None => vec![vec![]],
                Some(group) => group
                    .as_str()
                    .split(',')
                    .map(|part| part.split(" as ").next().unwrap().trim())
                    .filter(|part| !part.is_empty() && *part != "self")
                    .map(|part| part.split("::").map(String::from).collect())
                    .collect(),
            };
            for tail in tails {
                if let Some(f) = self.resolve(&[base.clone(), tail].concat()) {
                    if f != file {
                        out.insert(f);
                    }
                }
            }
        }
        out
    }
}

/// A file's text before its tests.
fn code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap()
}

#[test]
fn configuration_lies_on_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tree = Tree {
        files: src_files(),
        root: root.clone(),
    };
    let config = root.join("config/mod.rs");
    let graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = tree
        .files
        .keys()
        .map(|f| (f.clone(), tree.imports(f)))
        .collect();
    // The graph sees what it must: these edges exist in the code.
    for (from, to) in [
        ("pipeline.rs", "config/mod.rs"),
        ("config/mod.rs", "extract/mod.rs"),
        ("notify/alerts.rs", "notify/channels.rs"),
    ] {
        assert!(
            graph[&root.join(from)].contains(&root.join(to)),
            "the import graph misses {from} -> {to}: {:?}",
            graph[&root.join(from)]
        );
    }
    // Breadth-first from what config imports; a way back is a cycle.
    let mut came_from: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut queue: Vec<PathBuf> = graph[&config].iter().cloned().collect();
    for f in &queue {
        came_from.insert(f.clone(), config.clone());
    }
    while let Some(f) = queue.pop() {
        for next in &graph[&f] {
            if *next == config {
                let mut cycle = vec![f.clone()];
                while let Some(prev) = came_from.get(cycle.last().unwrap()) {
                    cycle.push(prev.clone());
                    if *prev == config {
                        break;
                    }
                }
                let names: Vec<String> = cycle
                    .iter()
                    .rev()
                    .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
                    .collect();
                panic!(
                    "config/mod.rs is on an import cycle: {} -> config/mod.rs",
                    names.join(" -> ")
                );
            }
            if !came_from.contains_key(next) {
                came_from.insert(next.clone(), f.clone());
                queue.push(next.clone());
            }
        }
    }
}

#[test]
fn no_source_file_is_over_800_lines() {
    let long: Vec<String> = src_files()
        .iter()
        .map(|(p, text)| (p, text.lines().count()))
        .filter(|(_, n)| *n > 800)
        .map(|(p, n)| format!("{} ({n} lines)", p.display()))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}
