//! The hook contract cannot drift: every method of the `Hook` trait has its event bit in
//! `HookEvents` and a call site in the server, and every event bit names a method. Read from the
//! crate's sources (architecture review §8: `on_auth_packet` was documented and never called).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
// A plain test reading the crate's sources: no async runtime here.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The names of the methods of `pub trait Hook`, except the ones every hook has.
fn hook_methods(hooks_rs: &str) -> Vec<String> {
    let start = hooks_rs.find("pub trait Hook").expect("trait Hook");
    let body = &hooks_rs[start..];
    let end = body.find("\n}\n").expect("end of trait Hook");
    body[..end]
        .lines()
        .filter_map(|line| line.trim().strip_prefix("fn "))
        .map(|rest| rest.split(['(', '<']).next().unwrap().to_owned())
        .filter(|name| !matches!(name.as_str(), "id" | "provides" | "init" | "stop"))
        .collect()
}

/// The event bits declared in `hook_events!`.
fn event_bits(hooks_rs: &str) -> Vec<String> {
    let start = hooks_rs.find("hook_events! {").expect("hook_events!");
    let body = &hooks_rs[start..];
    let end = body.find("\n}\n").expect("end of hook_events!");
    body[..end]
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (name, rest) = line.split_once(" = ")?;
            (rest.ends_with(';') && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn every_hook_method_has_an_event_bit_and_a_call_site() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let hooks_rs = std::fs::read_to_string(src.join("hooks.rs")).unwrap();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let code: Vec<String> = files
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();

    let methods = hook_methods(&hooks_rs);
    let bits = event_bits(&hooks_rs);
    assert!(methods.len() > 30, "trait Hook not parsed: {methods:?}");
    let mut problems = Vec::new();
    for method in &methods {
        let bit = method.to_ascii_uppercase();
        if !bits.contains(&bit) {
            problems.push(format!("Hook::{method} has no event bit {bit}"));
        }
        let checked = format!("HookEvents::{bit}");
        if !code.iter().any(|file| file.contains(&checked)) {
            problems.push(format!("{checked} is never checked"));
        }
        let call = format!(".{method}(");
        if !code.iter().any(|file| file.contains(&call)) {
            problems.push(format!("Hook::{method} is never called"));
        }
    }
    for bit in &bits {
        if !methods.contains(&bit.to_ascii_lowercase()) {
            problems.push(format!("HookEvents::{bit} names no method of Hook"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_hook_provides_nothing_unless_it_says_so() {
    struct Silent;
    impl mqtt_broker::Hook for Silent {
        fn id(&self) -> &str {
            "silent"
        }
    }
    assert_eq!(
        mqtt_broker::Hook::provides(&Silent),
        mqtt_broker::hooks::HookEvents::NONE
    );
}
