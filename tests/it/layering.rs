//! The code map's invariants, checked on the sources: only the sled engine
//! knows sled, only the PostgreSQL engine knows SQL, and the store's domain
//! modules import each other without a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("source directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn relative(path: &Path) -> String {
    path.strip_prefix(src())
        .expect("under src")
        .to_string_lossy()
        .into_owned()
}

/// Files naming the path `needle` (as a path of its own, not the tail of
/// another such as `engine::sled::`) outside the files allowed to.
fn mentions_outside(needle: &str, allowed: &[&str]) -> Vec<String> {
    sources_under(&src())
        .into_iter()
        .filter(|path| !allowed.contains(&relative(path).as_str()))
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("source file");
            text.match_indices(needle)
                .any(|(at, _)| !text[..at].ends_with(':'))
        })
        .map(|path| relative(&path))
        .collect()
}

#[test]
fn only_the_sled_engine_knows_sled() {
    let allowed = ["store/engine/sled.rs"];
    assert_eq!(mentions_outside("sled::", &allowed), Vec::<String>::new());
    // The check sees the crate where it is used.
    assert_eq!(
        mentions_outside("sled::", &[]),
        vec!["store/engine/sled.rs".to_owned()]
    );
}

#[test]
fn only_the_postgres_engine_knows_sql() {
    let allowed = ["store/engine/postgres.rs", "store/engine/postgres_tls.rs"];
    assert_eq!(
        mentions_outside("tokio_postgres", &allowed),
        Vec::<String>::new()
    );
    assert_eq!(
        mentions_outside("ISOLATION LEVEL", &allowed),
        Vec::<String>::new()
    );
}

/// Which sibling modules each module of `src/store/` imports (`super::x`).
fn store_imports() -> BTreeMap<String, BTreeSet<String>> {
    let dir = src().join("store");
    let modules: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("store directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
        .filter(|module| module != "mod")
        .collect();
    let mut imports = BTreeMap::new();
    for module in &modules {
        let text = std::fs::read_to_string(dir.join(format!("{module}.rs"))).expect("module");
        let mut named = BTreeSet::new();
        for (at, _) in text.match_indices("super::") {
            let rest = &text[at + "super::".len()..];
            let words: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split([',', ' ', '\n'])
                    .map(|word| word.split("::").next().unwrap_or(""))
                    .collect()
            } else {
                vec![
                    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or(""),
                ]
            };
            for word in words {
                if word != module && modules.contains(word) {
                    named.insert(word.to_owned());
                }
            }
        }
        imports.insert(module.clone(), named);
    }
    imports
}

/// A circle of imports, if there is one.
fn circle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == module) {
            let mut found = path[at..].to_vec();
            found.push(module.to_owned());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(found) = visit(next, imports, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    imports
        .keys()
        .find_map(|module| visit(module, imports, &mut Vec::new(), &mut done))
}

#[test]
fn the_store_modules_import_each_other_without_a_circle() {
    let imports = store_imports();
    // The check sees imports at all: the writer applies calls.
    assert!(imports["writer"].contains("apply"), "{imports:?}");
    assert_eq!(circle(&imports), None, "{imports:?}");
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let mut imports = BTreeMap::new();
    imports.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    imports.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    imports.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        circle(&imports),
        Some(
            vec!["a", "b", "c", "a"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );
}
