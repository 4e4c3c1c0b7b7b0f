//! The `topic` exchange: a message goes to every destination whose binding pattern
//! matches its routing key, with RabbitMQ's `*` (one word) and `#` (zero or more words)
//! wildcards. Bindings live in a word trie rather than one regex per binding, so that a
//! publish walks only the trie branches its words can reach: routing stays cheap with
//! 100,000 bindings, and a pattern with many `#` cannot make matching exponential.

use super::kind::{Binding, DestinationId, ExchangeType};
use crate::message::Message;
use std::collections::{HashMap, HashSet};

/// Splits a routing key or binding pattern into its dot-separated words, RabbitMQ's way:
/// the empty string has zero words (so only `#`-only patterns, and the empty pattern,
/// match the empty key), while any other string has one more word than it has dots, some
/// of them possibly empty (`"a."` is `["a", ""]`).
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// One trie node: the pattern prefix spelled by the path from the root.
#[derive(Default, Debug)]
struct Node {
    /// Children reached by a literal word (which may be empty).
    words: HashMap<String, Node>,
    /// Child reached by `*`.
    star: Option<Box<Node>>,
    /// Child reached by `#`.
    hash: Option<Box<Node>>,
    /// Destinations bound with exactly this pattern, each with its binding count.
    dests: Vec<(DestinationId, u32)>,
}

impl Node {
    /// True when the node holds no binding and has no child: it can be pruned.
    fn is_empty(&self) -> bool {
        self.dests.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    /// Removes one binding of `dest` with the pattern `words` below this node; prunes
    /// children left empty. Returns whether a binding was removed.
    fn remove(&mut self, words: &[&str], dest: DestinationId) -> bool {
        let Some((first, rest)) = words.split_first() else {
            let Some(pos) = self.dests.iter().position(|(d, _)| *d == dest) else {
                return false;
            };
            self.dests[pos].1 -= 1;
            if self.dests[pos].1 == 0 {
                self.dests.swap_remove(pos);
            }
            return true;
        };
        match *first {
            "*" => Self::remove_boxed(&mut self.star, rest, dest),
            "#" => Self::remove_boxed(&mut self.hash, rest, dest),
            word => {
                let Some(child) = self.words.get_mut(word) else {
                    return false;
                };
                let removed = child.remove(rest, dest);
                if child.is_empty() {
                    self.words.remove(word);
                }
                removed
            }
        }
    }

    /// [`Node::remove`] through a `*` or `#` slot, emptying the slot if the child is left
    /// empty.
    fn remove_boxed(slot: &mut Option<Box<Node>>, rest: &[&str], dest: DestinationId) -> bool {
        let Some(child) = slot.as_mut() else {
            return false;
        };
        let removed = child.remove(rest, dest);
        if child.is_empty() {
            *slot = None;
        }
        removed
    }
}

/// One routing-key match in progress: the key's words, and which (node, position) pairs
/// reachable through a `#` were already explored.
struct Walk<'k, 'o> {
    words: Vec<&'k str>,
    /// (node, number of words consumed) pairs visited below some `#`. Without a `#` on
    /// the path a node is reached at one position only, by one path, so it needs no
    /// entry; with one, the set bounds the work to nodes × words.
    seen: HashSet<(*const Node, usize)>,
    out: &'o mut Vec<DestinationId>,
}

impl Walk<'_, '_> {
    /// Explores `node` having consumed `i` words. Returns false (and does nothing) when
    /// this pair was already explored below a `#`.
    fn visit(&mut self, node: &Node, i: usize, below_hash: bool) -> bool {
        if below_hash && !self.seen.insert((node as *const Node, i)) {
            return false;
        }
        if i == self.words.len() {
            self.out.extend(node.dests.iter().map(|(d, _)| *d));
        } else {
            if let Some(child) = node.words.get(self.words[i]) {
                self.visit(child, i + 1, below_hash);
            }
            if let Some(child) = &node.star {
                self.visit(child, i + 1, below_hash);
            }
        }
        if let Some(child) = &node.hash {
            // `#` consumes 0..=remaining words. If (child, j) was already explored, the
            // loop that explored it also went on to every later j: stop there.
            for j in i..=self.words.len() {
                if !self.visit(child, j, true) {
                    break;
                }
            }
        }
        true
    }
}

/// The binding patterns of a topic exchange, as a trie of dot-separated words.
///
/// `*` matches exactly one word and `#` zero or more; words may be empty (`"a..b"` has
/// three words) but `""` has none (see `words`), as in RabbitMQ. The same pattern and destination may be inserted several
/// times (bindings differing only by arguments) and stays until removed as many times.
#[derive(Default, Debug)]
pub struct TopicTrie {
    root: Node,
    len: usize,
}

impl TopicTrie {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one binding of `dest` with `pattern`.
    pub fn insert(&mut self, pattern: &str, dest: DestinationId) {
        let mut node = &mut self.root;
        for word in words(pattern) {
            node = match word {
                "*" => node.star.get_or_insert_with(Default::default),
                "#" => node.hash.get_or_insert_with(Default::default),
                word => node.words.entry(word.to_string()).or_default(),
            };
        }
        match node.dests.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, count)) => *count += 1,
            None => node.dests.push((dest, 1)),
        }
        self.len += 1;
    }

    /// Removes one binding of `dest` with `pattern`, pruning nodes left empty. Returns
    /// false (and changes nothing) when there is no such binding.
    pub fn remove(&mut self, pattern: &str, dest: DestinationId) -> bool {
        let removed = self.root.remove(&words(pattern), dest);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Pushes onto `out` every destination with a pattern matching `key`. A destination
    /// may be pushed more than once (once per matching pattern); callers dedup.
    pub fn matches(&self, key: &str, out: &mut Vec<DestinationId>) {
        let mut walk = Walk {
            words: words(key),
            seen: HashSet::new(),
            out,
        };
        walk.visit(&self.root, 0, false);
    }

    /// The number of bindings held, counting a repeated pattern and destination once per
    /// insertion.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the trie holds no binding.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Routes by topic pattern, through a [`TopicTrie`] kept in step with the bindings.
#[derive(Default)]
pub struct TopicExchange {
    trie: TopicTrie,
}

impl ExchangeType for TopicExchange {
    fn bind(&mut self, binding: &Binding) {
        self.trie.insert(&binding.routing_key, binding.destination);
    }

    fn unbind(&mut self, binding: &Binding) {
        self.trie.remove(&binding.routing_key, binding.destination);
    }

    fn route(&self, message: &Message, _bindings: &[Binding], out: &mut Vec<DestinationId>) {
        self.trie.matches(&message.routing_key, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldTable;

    fn matched(trie: &TopicTrie, key: &str) -> Vec<DestinationId> {
        let mut out = vec![];
        trie.matches(key, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A direct, exponential-time reading of the rules, to check the trie against.
    fn reference_match(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|n| reference_match(rest, &key[n..])),
            Some((&"*", rest)) => !key.is_empty() && reference_match(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && reference_match(rest, &key[1..]),
        }
    }

    #[test]
    fn pattern_table() {
        let cases: &[(&str, &str, bool)] = &[
            // RabbitMQ tutorial 5.
            ("*.orange.*", "quick.orange.rabbit", true),
            ("*.*.rabbit", "quick.orange.rabbit", true),
            ("*.orange.*", "lazy.orange.elephant", true),
            ("lazy.#", "lazy.orange.elephant", true),
            ("*.orange.*", "quick.orange.fox", true),
            ("*.*.rabbit", "quick.orange.fox", false),
            ("lazy.#", "lazy.brown.fox", true),
            ("*.orange.*", "lazy.brown.fox", false),
            ("*.*.rabbit", "lazy.pink.rabbit", true),
            ("lazy.#", "lazy.pink.rabbit", true),
            ("*.orange.*", "quick.brown.fox", false),
            ("*.*.rabbit", "quick.brown.fox", false),
            ("lazy.#", "quick.brown.fox", false),
            ("*.orange.*", "orange", false),
            ("*.orange.*", "quick.orange.new.rabbit", false),
            ("lazy.#", "lazy.orange.new.rabbit", true),
            ("*.*.rabbit", "lazy.orange.new.rabbit", false),
            ("lazy.#", "lazy", true),
            ("lazy.#", "lazyx", false),
            // Literal words.
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.b", "a", false),
            ("a", "A", false),
            // `#` at the start.
            ("#.z", "z", true),
            ("#.z", "a.z", true),
            ("#.z", "a.b.z", true),
            ("#.z", "z.a", false),
            ("#.z", "", false),
            // `#` in the middle.
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
            ("a.#.z", "z", false),
            ("a.#.z", "a.z.z", true),
            // `#` at the end.
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("a.#", "b.a", false),
            // `#` alone and repeated.
            ("#", "", true),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("#", "..", true),
            ("#.#", "", true),
            ("#.#", "a", true),
            ("#.#", "a.b.c", true),
            ("a.#.#.b", "a.b", true),
            ("a.#.#.b", "a.x.y.z.b", true),
            ("#.a.#", "a", true),
            ("#.a.#", "x.a.y", true),
            ("#.a.#", "x.y", false),
            // `*` with `#`.
            ("*.#", "", false),
            ("#.*", "", false),
            ("*.#", "a.b", true),
            ("#.*", "a", true),
            ("#.*.*", "a", false),
            ("#.*.*", "a.b", true),
            ("*.#.*", "a", false),
            ("*.#.*", "a.b", true),
            ("*.#.*", "a.b.c.d", true),
            // Empty words.
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
            ("a.b", "a..b", false),
            ("a.#.b", "a..b", true),
            // The empty key has zero words (RabbitMQ): only `#`, `#.#`... and `""` match it.
            ("", "", true),
            ("*", "", false),
            ("*.*", "", false),
            ("#.#.*", "", false),
            ("a", "", false),
            ("", ".", false),
            ("#", ".", true),
            ("", "a", false),
            ("*", "a", true),
            ("*", "a.b", false),
            (".", ".", true),
            ("*.*", ".", true),
            ("*", ".", false),
            ("a.", "a", false),
            ("a.", "a.", true),
            ("a.*", "a.", true),
        ];
        for &(pattern, key, expected) in cases {
            let mut trie = TopicTrie::new();
            trie.insert(pattern, 7);
            let got = !matched(&trie, key).is_empty();
            assert_eq!(got, expected, "pattern {pattern:?} key {key:?}");
            let reference = reference_match(&words(pattern), &words(key));
            assert_eq!(
                reference, expected,
                "reference: pattern {pattern:?} key {key:?}"
            );
        }
    }

    /// Every pattern of up to 4 words over {a, b, "", *, #} in one trie, against every key
    /// of up to 4 words over {a, b, ""}.
    #[test]
    fn agrees_with_the_reference_exhaustively() {
        fn all(alphabet: &[&str], max: usize) -> Vec<String> {
            let mut level: Vec<Vec<&str>> = alphabet.iter().map(|w| vec![*w]).collect();
            let mut result = vec![];
            for _ in 0..max {
                result.extend(level.iter().map(|w| w.join(".")));
                level = level
                    .iter()
                    .flat_map(|w| {
                        alphabet.iter().map(move |a| {
                            let mut v = w.clone();
                            v.push(a);
                            v
                        })
                    })
                    .collect();
            }
            result
        }
        let patterns = all(&["a", "b", "", "*", "#"], 4);
        let keys = all(&["a", "b", ""], 4);
        let mut trie = TopicTrie::new();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(p, i as DestinationId);
        }
        assert_eq!(trie.len(), patterns.len());
        for key in &keys {
            let key_words = words(key);
            let expected: Vec<DestinationId> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| reference_match(&words(p), &key_words))
                .map(|(i, _)| i as DestinationId)
                .collect();
            assert_eq!(matched(&trie, key), expected, "key {key:?}");
        }
    }

    #[test]
    fn several_destinations_and_patterns() {
        let mut trie = TopicTrie::new();
        trie.insert("*.orange.*", 1);
        trie.insert("*.*.rabbit", 2);
        trie.insert("lazy.#", 2);
        trie.insert("#", 3);
        trie.insert("quick.orange.rabbit", 4);
        assert_eq!(matched(&trie, "quick.orange.rabbit"), vec![1, 2, 3, 4]);
        assert_eq!(matched(&trie, "lazy.orange.elephant"), vec![1, 2, 3]);
        assert_eq!(matched(&trie, "lazy.pink.rabbit"), vec![2, 3]);
        assert_eq!(matched(&trie, "quick.brown.fox"), vec![3]);
        // Two patterns of one destination matching push it twice before dedup.
        let mut out = vec![];
        trie.matches("lazy.pink.rabbit", &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![2, 2, 3]);
    }

    #[test]
    fn one_destination_pushed_once_per_pattern_despite_many_paths() {
        // "#.#.#" reaches its end node by many paths; it is one binding.
        let mut trie = TopicTrie::new();
        trie.insert("#.#.#", 1);
        let mut out = vec![];
        trie.matches("a.b.c.d", &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn remove_is_reference_counted() {
        let mut trie = TopicTrie::new();
        trie.insert("a.*", 1);
        trie.insert("a.*", 1);
        trie.insert("a.*", 2);
        assert_eq!(trie.len(), 3);
        assert!(trie.remove("a.*", 1));
        assert_eq!(matched(&trie, "a.b"), vec![1, 2]);
        assert!(trie.remove("a.*", 1));
        assert_eq!(matched(&trie, "a.b"), vec![2]);
        assert!(!trie.remove("a.*", 1), "already fully removed");
        assert!(!trie.remove("a.#", 2), "other pattern");
        assert!(!trie.remove("a", 2), "prefix of a pattern");
        assert!(!trie.remove("a.*.c", 2), "extension of a pattern");
        assert_eq!(trie.len(), 1);
        assert!(trie.remove("a.*", 2));
        assert!(trie.is_empty());
        assert!(matched(&trie, "a.b").is_empty());
    }

    #[test]
    fn remove_prunes_empty_nodes() {
        let mut trie = TopicTrie::new();
        trie.insert("a.b.c", 1);
        trie.insert("a.#.*", 1);
        trie.insert("a", 2);
        trie.insert("x.y", 3);
        assert!(trie.remove("a.b.c", 1));
        assert!(trie.remove("a.#.*", 1));
        // "a" still holds a binding, so it stays, but has no child any more.
        let a = &trie.root.words["a"];
        assert!(a.words.is_empty() && a.star.is_none() && a.hash.is_none());
        assert!(trie.remove("x.y", 3));
        assert!(!trie.root.words.contains_key("x"));
        assert!(trie.remove("a", 2));
        assert!(trie.root.is_empty());
        assert!(trie.is_empty());
    }

    #[test]
    fn exchange_follows_bind_and_unbind() {
        let b = |dest, key: &str, tag: i64| Binding {
            destination: dest,
            routing_key: key.into(),
            arguments: FieldTable::from([("tag".to_string(), tag.into())]),
        };
        let mut x = TopicExchange::default();
        x.bind(&b(1, "stock.#", 1));
        x.bind(&b(1, "stock.#", 2));
        x.bind(&b(2, "*.eur", 1));
        let route = |x: &TopicExchange, key: &str| {
            let mut out = vec![];
            x.route(&Message::new("t", key, ""), &[], &mut out);
            out.sort_unstable();
            out.dedup();
            out
        };
        assert_eq!(route(&x, "stock.eur"), vec![1, 2]);
        x.unbind(&b(1, "stock.#", 1));
        assert_eq!(route(&x, "stock.usd"), vec![1]);
        x.unbind(&b(1, "stock.#", 2));
        assert_eq!(route(&x, "stock.usd"), Vec::<DestinationId>::new());
        assert_eq!(route(&x, "stock.eur"), vec![2]);
    }

    #[test]
    fn many_bindings_route_correctly() {
        let mut trie = TopicTrie::new();
        for i in 0..100_000u32 {
            trie.insert(&format!("region{}.svc{}.*", i % 100, i / 100), i);
        }
        trie.insert("#.alert", 100_000);
        for i in 0..1_000u32 {
            let mut out = vec![];
            trie.matches(&format!("region{}.svc{}.alert", i % 100, i), &mut out);
            assert_eq!(out.len(), 2, "iteration {i}");
        }
    }

    #[test]
    fn many_hashes_do_not_blow_up() {
        let mut trie = TopicTrie::new();
        let pattern = vec!["#"; 30].join(".") + ".x." + &vec!["#.a"; 15].join(".");
        trie.insert(&pattern, 1);
        // An exponential matcher would not finish; timing itself belongs in benches/.
        let key = vec!["a"; 200].join(".");
        assert!(matched(&trie, &key).is_empty());
        let key = format!("x.{key}");
        assert_eq!(matched(&trie, &key), vec![1]);
    }
}
