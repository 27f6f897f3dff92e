//! Cursor scans ([`KvsEngine::scan_bytes`](crate::KvsEngine::scan_bytes)): walking every key
//! of a store in pages, and the key patterns a walk can filter by (Redis's glob rules).

/// Which keys a scan returns: those starting with `prefix` (empty: every key) and, if
/// `pattern` is set, matching it as a glob with Redis's rules (see [`glob_match`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanFilter {
    /// Only keys starting with these bytes.
    pub prefix: Vec<u8>,
    /// Only keys matching this glob pattern.
    pub pattern: Option<Vec<u8>>,
}

impl ScanFilter {
    /// Every key.
    pub fn all() -> ScanFilter {
        ScanFilter::default()
    }

    /// Keys starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> ScanFilter {
        ScanFilter {
            prefix: prefix.to_vec(),
            pattern: None,
        }
    }

    /// Keys matching the glob `pattern`.
    pub fn pattern(pattern: &[u8]) -> ScanFilter {
        ScanFilter {
            prefix: Vec::new(),
            pattern: Some(pattern.to_vec()),
        }
    }

    /// Whether `key` passes the filter.
    pub fn matches(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix)
            && self
                .pattern
                .as_deref()
                .is_none_or(|pattern| glob_match(pattern, key))
    }
}

/// One page of a scan: the keys found, and the cursor to pass to the next call (`0` when the
/// walk is complete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The cursor of the next page; `0`: the walk is over.
    pub cursor: u64,
    /// Keys of this page that pass the filter. Fewer than the count asked for (even none) does
    /// not mean the walk is over: only a `cursor` of `0` does.
    pub keys: Vec<Vec<u8>>,
}

/// How deep `*` may nest before a match gives up (a pattern of thousands of stars against a
/// long key would otherwise recurse that deep), as redis-server limits it.
const MAX_NESTING: usize = 1000;

/// Whether `key` matches the glob `pattern`, byte for byte by the rules redis-server applies
/// to `KEYS` and `SCAN ... MATCH`:
///
/// - `*` matches any run of bytes (also none), `?` any one byte;
/// - `[abc]` one of the bytes listed, `[^abc]` one byte not listed, `[a-z]` a byte in the
///   range (either order), `\` inside brackets takes the next byte literally; a `[` that is
///   never closed takes the rest of the pattern as its set;
/// - `\x` matches `x` itself; every other byte matches itself (case matters).
///
/// ```
/// use kvs::glob_match;
/// assert!(glob_match(b"user:*:name", b"user:42:name"));
/// assert!(glob_match(b"h[ae]llo", b"hello"));
/// assert!(!glob_match(b"h[^e]llo", b"hello"));
/// assert!(glob_match(br"literal\*", b"literal*"));
/// ```
pub fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    if pattern == b"*" {
        // redis-server's KEYS and SCAN take a lone `*` as "every key", the empty key too
        // (its matcher alone would not match an empty key with any pattern but the empty one).
        return true;
    }
    let mut skip_longer = false;
    match_from(pattern, key, &mut skip_longer, 0)
}

fn match_from(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool, nesting: usize) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_from(&p[1..], s, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        // A later star failed against every shorter rest: a longer one
                        // fails too.
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let negate = p.first() == Some(&b'^');
                if negate {
                    p = &p[1..];
                }
                let c = s[0];
                let mut matched = false;
                // `p` stops on the closing `]`, or is empty for a set never closed.
                loop {
                    match p {
                        [] => break,
                        [b'\\', escaped, ..] => {
                            if *escaped == c {
                                matched = true;
                            }
                            p = &p[2..];
                        }
                        [b']', ..] => break,
                        [start, b'-', end, ..] => {
                            let (low, high) = if start <= end {
                                (*start, *end)
                            } else {
                                (*end, *start)
                            };
                            if (low..=high).contains(&c) {
                                matched = true;
                            }
                            p = &p[3..];
                        }
                        [byte, ..] => {
                            if *byte == c {
                                matched = true;
                            }
                            p = &p[1..];
                        }
                    }
                }
                if matched == negate {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    // The set ran to the end of the pattern: nothing is left to match.
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                if p[1] != s[0] {
                    return false;
                }
                p = &p[1..];
                s = &s[1..];
            }
            byte => {
                if byte != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(glob_match(b"*", b""));
        assert!(
            !glob_match(b"**", b""),
            "as redis-server: only a lone star matches the empty key"
        );
        assert!(!glob_match(b"?*", b""));
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"a*", b"a"));
        assert!(glob_match(b"a*c", b"abbbc"));
        assert!(!glob_match(b"a*c", b"abbbd"));
        assert!(glob_match(b"a**c", b"ac"));
        assert!(glob_match(b"?", b"x"));
        assert!(!glob_match(b"?", b""));
        assert!(!glob_match(b"?", b"xy"));
        assert!(glob_match(b"h?llo", b"hallo"));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"abc", b"ab"));
        assert!(!glob_match(b"ab", b"abc"));
    }

    #[test]
    fn bracket_sets_ranges_and_negation() {
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[ae]llo", b"hillo"));
        assert!(glob_match(b"h[^e]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(
            glob_match(b"h[b-a]llo", b"hallo"),
            "a reversed range is the same range"
        );
        assert!(!glob_match(b"h[a-b]llo", b"hcllo"));
        assert!(glob_match(br"[\]]", b"]"));
        assert!(glob_match(b"[-a]", b"-"));
        // A set never closed takes the rest of the pattern.
        assert!(glob_match(b"a[bc", b"ab"));
        assert!(glob_match(b"a[bc", b"ac"));
        assert!(!glob_match(b"a[bc", b"a]"));
        assert!(!glob_match(b"a[bc", b"abc"));
    }

    #[test]
    fn escapes_match_the_byte_itself() {
        assert!(glob_match(br"a\*b", b"a*b"));
        assert!(!glob_match(br"a\*b", b"axb"));
        assert!(glob_match(br"\?", b"?"));
        assert!(!glob_match(br"\?", b"x"));
        // A trailing backslash is a literal backslash.
        assert!(glob_match(b"a\\", b"a\\"));
    }

    #[test]
    fn a_pathological_pattern_answers_quickly() {
        let key = vec![b'a'; 10_000];
        let mut pattern = b"a*".repeat(2_000);
        pattern.push(b'b');
        assert!(!glob_match(&pattern, &key));
    }

    #[test]
    fn filters_combine_prefix_and_pattern() {
        let filter = ScanFilter {
            prefix: b"user:".to_vec(),
            pattern: Some(b"*:name".to_vec()),
        };
        assert!(filter.matches(b"user:1:name"));
        assert!(!filter.matches(b"user:1:mail"));
        assert!(!filter.matches(b"group:1:name"));
        assert!(ScanFilter::all().matches(b""));
        assert!(ScanFilter::prefix(b"a").matches(b"ab"));
        assert!(!ScanFilter::pattern(b"a?").matches(b"a"));
    }
}
