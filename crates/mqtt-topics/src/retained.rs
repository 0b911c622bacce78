//! The retained-message index: one value per topic, found by filter.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::matching::strip_share;

/// Retained messages (or anything else kept per topic name), indexed by topic level so that a
/// filter with a literal prefix visits only that part of the tree.
///
/// One `RwLock` guards the tree: lookups happen on SUBSCRIBE and writes on retained PUBLISH, both
/// far rarer than routing, and a lookup holds the read lock only while it walks.
///
/// Each node keeps its children in order, so that the topics matching a filter can also be read
/// a page at a time ([`RetainedIndex::matching_page`]): a subscriber to `#` among a hundred
/// thousand retained messages is served as its queue drains, without copying them all at once
/// or holding the lock for the whole walk.
#[derive(Debug)]
pub struct RetainedIndex<V> {
    root: RwLock<Node<V>>,
    len: AtomicUsize,
}

#[derive(Debug)]
struct Node<V> {
    children: BTreeMap<Box<str>, Node<V>>,
    value: Option<(Arc<str>, V)>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: BTreeMap::new(),
            value: None,
        }
    }
}

impl<V> Node<V> {
    fn count(&self) -> usize {
        1 + self.children.values().map(Node::count).sum::<usize>()
    }
}

impl<V: Clone> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> RetainedIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            root: RwLock::new(Node::default()),
            len: AtomicUsize::new(0),
        }
    }

    /// Sets the value of `topic` (a valid Topic Name) and returns the previous one
    /// [MQTT-3.3.1-5].
    pub fn set(&self, topic: &str, value: V) -> Option<V> {
        let mut root = self.root.write();
        let mut node = &mut *root;
        for level in topic.split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        let previous = node
            .value
            .replace((Arc::from(topic), value))
            .map(|(_, value)| value);
        if previous.is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        previous
    }

    /// Removes the value of `topic` if `condition` holds for it (checked under the same lock, so
    /// a value set meanwhile is never removed by mistake); returns it. Nodes left empty are freed.
    pub fn remove_if(&self, topic: &str, condition: impl FnOnce(&V) -> bool) -> Option<V> {
        fn remove_at<'a, V>(
            node: &mut Node<V>,
            mut levels: impl Iterator<Item = &'a str>,
            condition: &mut Option<impl FnOnce(&V) -> bool>,
        ) -> Option<V> {
            match levels.next() {
                None => {
                    let holds = node.value.as_ref().is_some_and(|(_, value)| {
                        condition.take().is_some_and(|check| check(value))
                    });
                    if holds {
                        node.value.take().map(|(_, value)| value)
                    } else {
                        None
                    }
                }
                Some(level) => {
                    let child = node.children.get_mut(level)?;
                    let removed = remove_at(child, levels, condition);
                    if child.value.is_none() && child.children.is_empty() {
                        node.children.remove(level);
                    }
                    removed
                }
            }
        }
        let mut condition = Some(condition);
        let removed = remove_at(&mut self.root.write(), topic.split('/'), &mut condition);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes the value of `topic` and returns it; nodes left empty are freed
    /// [MQTT-3.3.1-6].
    pub fn remove(&self, topic: &str) -> Option<V> {
        self.remove_if(topic, |_| true)
    }

    /// The value of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<V> {
        let root = self.root.read();
        let mut node = &*root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref().map(|(_, value)| value.clone())
    }

    /// Every (topic, value) whose topic matches `filter`, agreeing with [`crate::matches`]: a
    /// wildcard first level skips `$` topics [MQTT-4.7.2-1]. Literal levels are looked up, not
    /// scanned. Order is unspecified.
    pub fn matching(&self, filter: &str) -> Vec<(Arc<str>, V)> {
        let mut out = Vec::new();
        walk(&self.root.read(), true, Some(strip_share(filter)), &mut out);
        out
    }

    /// A page of the (topic, value) pairs whose topic matches `filter` (agreeing with
    /// [`RetainedIndex::matching`]), in topic order (level by level, a topic before the topics
    /// below it), starting strictly after the position `after` (`None`: from the start).
    ///
    /// The walk stops once it has `max_entries` pairs or has visited `max_visits` nodes, so that
    /// one call holds the read lock for a bounded time whatever the index holds;
    /// [`RetainedPage::resume`] is then the position to pass as `after` for the next page, and
    /// `None` once the walk is complete. A topic set between pages is found if it comes after
    /// the position; no topic is returned twice by one run of pages.
    pub fn matching_page(
        &self,
        filter: &str,
        after: Option<&str>,
        max_entries: usize,
        max_visits: usize,
    ) -> RetainedPage<V> {
        let key: Option<Vec<&str>> = after.map(|after| after.split('/').collect());
        let root = self.root.read();
        let mut walk = PageWalk {
            entries: Vec::new(),
            max_entries: max_entries.max(1),
            visits_left: max_visits.max(1),
            path: Vec::new(),
            stopped_at: None,
        };
        walk.children(
            &root,
            Want::from_rest(strip_share(filter)),
            true,
            key.as_deref(),
        );
        RetainedPage {
            entries: walk.entries,
            resume: walk.stopped_at,
        }
    }

    /// Keeps only the entries for which `keep` returns true (e.g. to drop expired messages),
    /// freeing emptied nodes; returns how many were removed.
    pub fn retain(&self, mut keep: impl FnMut(&str, &V) -> bool) -> usize {
        fn prune<V>(node: &mut Node<V>, keep: &mut dyn FnMut(&str, &V) -> bool) -> usize {
            let mut removed = 0;
            if let Some((topic, value)) = &node.value
                && !keep(topic, value)
            {
                node.value = None;
                removed += 1;
            }
            node.children.retain(|_, child| {
                removed += prune(child, keep);
                child.value.is_some() || !child.children.is_empty()
            });
            removed
        }
        let removed = prune(&mut self.root.write(), &mut keep);
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// The number of topics with a value.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no topic has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of nodes, 1 when empty. For tests and metrics.
    pub fn node_count(&self) -> usize {
        self.root.read().count()
    }
}

/// One page of [`RetainedIndex::matching_page`].
#[derive(Debug)]
pub struct RetainedPage<V> {
    /// The matching (topic, value) pairs, in topic order.
    pub entries: Vec<(Arc<str>, V)>,
    /// Where the next page starts (pass it as `after`); `None` when the walk is complete.
    pub resume: Option<String>,
}

/// What a node of a paged walk is asked for by the rest of the filter.
#[derive(Clone, Copy)]
enum Want<'f> {
    /// The filter ends here: the node's own value matches, nothing below it.
    Here,
    /// `#`: the node's value and everything below it match.
    Subtree,
    /// These filter levels are still to match, starting with this node's children.
    Rest(&'f str),
}

impl<'f> Want<'f> {
    fn from_rest(rest: &'f str) -> Self {
        if rest == "#" {
            Self::Subtree
        } else {
            Self::Rest(rest)
        }
    }
}

/// The state of one [`RetainedIndex::matching_page`] walk: a depth-first walk in child order,
/// which visits topics in the order of their levels.
struct PageWalk<'a, V> {
    entries: Vec<(Arc<str>, V)>,
    max_entries: usize,
    visits_left: usize,
    /// The levels of the node being visited.
    path: Vec<&'a str>,
    stopped_at: Option<String>,
}

impl<'a, V: Clone> PageWalk<'a, V> {
    /// Visits `node` (not the root), whose levels are `self.path`. `after` is `None` when the
    /// node comes after the resume position, or the resume position's levels below this node
    /// when the node is on its path (then the node itself is not after it). Returns whether the
    /// page is complete.
    fn visit(&mut self, node: &'a Node<V>, want: Want<'_>, after: Option<&[&str]>) -> bool {
        // Nodes on the resume position's path were seen by an earlier page: they are walked
        // through, not counted, so that every page stops strictly after the position.
        if after.is_none() {
            if matches!(want, Want::Here | Want::Subtree)
                && let Some((topic, value)) = &node.value
            {
                self.entries.push((topic.clone(), value.clone()));
            }
            self.visits_left = self.visits_left.saturating_sub(1);
            if self.entries.len() >= self.max_entries || self.visits_left == 0 {
                // Everything up to this node (before its children) has been seen.
                self.stopped_at = Some(self.path.join("/"));
                return true;
            }
        }
        self.children(node, want, false, after)
    }

    /// Visits the children of `node` that `want` asks for and that come after the resume
    /// position, in order. Returns whether the page is complete.
    fn children(
        &mut self,
        node: &'a Node<V>,
        want: Want<'_>,
        root: bool,
        after: Option<&[&str]>,
    ) -> bool {
        // Wildcards at the first level do not reach `$` topics [MQTT-4.7.2-1].
        let visible = |name: &str| !(root && name.starts_with('$'));
        // The children at or after the resume position's next level, and that level's rest.
        let (from, below): (Option<&str>, &[&str]) = match after {
            Some([first, rest @ ..]) => (Some(first), rest),
            _ => (None, &[]),
        };
        let on_path = |name: &str| (Some(name) == from).then_some(below);
        let range = match from {
            Some(first) => node
                .children
                .range::<str, _>((Bound::Included(first), Bound::Unbounded)),
            None => node.children.range::<str, _>(..),
        };
        let (level, next) = match want {
            Want::Here => return false,
            Want::Subtree => ("#", Want::Subtree),
            Want::Rest(rest) => match rest.split_once('/') {
                Some((level, next)) => (level, Want::from_rest(next)),
                None => (rest, Want::Here),
            },
        };
        match level {
            "#" | "+" => {
                for (name, child) in range {
                    if !visible(name) {
                        continue;
                    }
                    self.path.push(name);
                    let done = self.visit(child, next, on_path(name));
                    self.path.pop();
                    if done {
                        return true;
                    }
                }
                false
            }
            literal => {
                if from.is_some_and(|first| literal < first) {
                    return false;
                }
                let Some((name, child)) = node.children.get_key_value(literal) else {
                    return false;
                };
                self.path.push(name);
                let done = self.visit(child, next, on_path(name));
                self.path.pop();
                done
            }
        }
    }
}

fn push_subtree<V: Clone>(node: &Node<V>, out: &mut Vec<(Arc<str>, V)>) {
    if let Some((topic, value)) = &node.value {
        out.push((topic.clone(), value.clone()));
    }
    for child in node.children.values() {
        push_subtree(child, out);
    }
}

fn walk<V: Clone>(node: &Node<V>, root: bool, rest: Option<&str>, out: &mut Vec<(Arc<str>, V)>) {
    let Some(rest) = rest else {
        if let Some((topic, value)) = &node.value {
            out.push((topic.clone(), value.clone()));
        }
        return;
    };
    let (level, next) = match rest.split_once('/') {
        Some((level, next)) => (level, Some(next)),
        None => (rest, None),
    };
    // Wildcards at the first level do not reach `$` topics [MQTT-4.7.2-1].
    let visible = |name: &str| !(root && name.starts_with('$'));
    match level {
        "#" => {
            // `a/#` also matches `a` itself [MQTT-4.7.1-1].
            if let Some((topic, value)) = &node.value {
                out.push((topic.clone(), value.clone()));
            }
            for (name, child) in &node.children {
                if visible(name) {
                    push_subtree(child, out);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if visible(name) {
                    walk(child, false, next, out);
                }
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                walk(child, false, next, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(index: &RetainedIndex<u32>, filter: &str) -> Vec<String> {
        let mut topics: Vec<String> = index
            .matching(filter)
            .into_iter()
            .map(|(topic, _)| topic.to_string())
            .collect();
        topics.sort();
        topics
    }

    #[test]
    fn finds_by_filter() {
        let index = RetainedIndex::new();
        for (i, topic) in ["a", "a/b", "a/b/c", "a//c", "$SYS/x", "b/c", "/"]
            .iter()
            .enumerate()
        {
            index.set(topic, i as u32);
        }
        assert_eq!(
            topics(&index, "#"),
            ["/", "a", "a//c", "a/b", "a/b/c", "b/c"]
        );
        assert_eq!(topics(&index, "a/#"), ["a", "a//c", "a/b", "a/b/c"]);
        assert_eq!(topics(&index, "a/+/c"), ["a//c", "a/b/c"]);
        assert_eq!(topics(&index, "+"), ["a"]);
        assert_eq!(topics(&index, "+/+"), ["/", "a/b", "b/c"]);
        assert_eq!(topics(&index, "$SYS/#"), ["$SYS/x"]);
        assert_eq!(topics(&index, "a/b"), ["a/b"]);
        assert_eq!(topics(&index, "$share/g/a/b"), ["a/b"]);
    }

    /// Pages of one entry or one visit each still move on, also past the empty level and
    /// through the levels of the position they resume from.
    #[test]
    fn the_smallest_pages_make_progress() {
        let index = RetainedIndex::new();
        for (i, topic) in ["", "/", "a", "a/b", "a/b/c", "b"].iter().enumerate() {
            index.set(topic, i as u32);
        }
        for (entries, visits) in [(1, 1), (1, 100), (100, 1)] {
            let mut after: Option<String> = None;
            let mut seen = Vec::new();
            for _ in 0..100 {
                let page = index.matching_page("#", after.as_deref(), entries, visits);
                seen.extend(page.entries.into_iter().map(|(t, _)| t.to_string()));
                after = page.resume;
                if after.is_none() {
                    break;
                }
            }
            assert!(after.is_none(), "the walk ended");
            assert_eq!(seen, ["", "/", "a", "a/b", "a/b/c", "b"]);
        }
    }

    #[test]
    fn set_replaces_and_remove_frees_nodes() {
        let index = RetainedIndex::new();
        assert_eq!(index.set("a/b/c", 1), None);
        assert_eq!(index.set("a/b/c", 2), Some(1));
        assert_eq!(index.get("a/b/c"), Some(2));
        assert_eq!(index.len(), 1);
        assert_eq!(index.remove("a/b"), None);
        assert_eq!(index.remove("a/b/c"), Some(2));
        assert!(index.is_empty());
        assert_eq!(index.node_count(), 1);
    }

    #[test]
    fn remove_if_checks_the_current_value() {
        let index = RetainedIndex::new();
        index.set("a/b", 1);
        assert_eq!(index.remove_if("a/b", |value| *value == 2), None);
        assert_eq!(index.get("a/b"), Some(1));
        assert_eq!(index.remove_if("a/b", |value| *value == 1), Some(1));
        assert_eq!(index.node_count(), 1);
    }

    #[test]
    fn retain_drops_and_prunes() {
        let index = RetainedIndex::new();
        for i in 0..10u32 {
            index.set(&format!("t/{i}/x"), i);
        }
        assert_eq!(index.retain(|_, value| value % 2 == 0), 5);
        assert_eq!(index.len(), 5);
        assert_eq!(index.node_count(), 1 + 1 + 5 + 5);
    }
}
