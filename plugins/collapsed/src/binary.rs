//! The binary stack formats of Pyroscope's old agents (reference §2.4.3–2.4.4):
//! * `trie`: pre-order nodes of `uvarint len, name fragment, uvarint value, uvarint children`;
//!   a node's key is its parent's key plus its fragment; every node with a value is a stack
//!   whose key is folded text (`a;b;c`).
//! * `tree`: pre-order nodes of `uvarint len, frame name, uvarint self, uvarint children`; the
//!   root's name is ignored; every node with a self value is the stack from the root's child.

use kiln_plugin_api::varint::{read_uvarint, VarintError};
use kiln_plugin_api::DecodeError;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> DecodeError {
        DecodeError::Malformed(format!("{what} at byte {}", self.pos))
    }

    fn uvarint(&mut self) -> Result<u64, DecodeError> {
        read_uvarint(self.bytes, &mut self.pos).map_err(|e| match e {
            VarintError::Truncated => self.err("truncated varint"),
            VarintError::TooLong => self.err("varint longer than 10 bytes"),
        })
    }

    fn bytes(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err("name runs past the end of the body"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// Nodes deeper than this are refused: real stacks are far shallower, and it bounds the work
/// stack on hostile input.
const MAX_DEPTH: usize = 4096;

/// Folded stacks and values of a `trie` body.
pub fn decode_trie(body: &[u8]) -> Result<Vec<(String, i64)>, DecodeError> {
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let mut out = Vec::new();
    // (key length of the parent, children left) per open ancestor.
    let mut key: Vec<u8> = Vec::new();
    let mut open: Vec<(usize, u64)> = Vec::new();
    loop {
        let len = r.uvarint()?;
        let fragment = r.bytes(len)?;
        let parent_len = key.len();
        key.extend_from_slice(fragment);
        let value = r.uvarint()?;
        let children = r.uvarint()?;
        if value > 0 {
            let stack = String::from_utf8(key.clone()).map_err(|_| r.err("stack is not UTF-8"))?;
            out.push((
                stack,
                i64::try_from(value).map_err(|_| r.err("value too large"))?,
            ));
        }
        if children > 0 {
            if open.len() >= MAX_DEPTH {
                return Err(r.err("trie nested deeper than 4096"));
            }
            open.push((parent_len, children));
            continue;
        }
        key.truncate(parent_len);
        // Close finished ancestors.
        loop {
            let Some(top) = open.last_mut() else {
                if r.pos != body.len() {
                    return Err(r.err("trailing bytes after the trie"));
                }
                return Ok(out);
            };
            top.1 -= 1;
            if top.1 > 0 {
                break;
            }
            let (len, _) = open.pop().expect("non-empty");
            key.truncate(len);
        }
    }
}

/// Stacks (root first) and self values of a `tree` body.
pub fn decode_tree(body: &[u8]) -> Result<Vec<(Vec<String>, i64)>, DecodeError> {
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut open: Vec<u64> = Vec::new();
    let mut root = true;
    loop {
        let len = r.uvarint()?;
        let name =
            String::from_utf8(r.bytes(len)?.to_vec()).map_err(|_| r.err("name is not UTF-8"))?;
        let self_value = r.uvarint()?;
        let children = r.uvarint()?;
        if !root {
            path.push(name);
            if self_value > 0 {
                out.push((
                    path.clone(),
                    i64::try_from(self_value).map_err(|_| r.err("value too large"))?,
                ));
            }
        }
        if children > 0 {
            if open.len() >= MAX_DEPTH {
                return Err(r.err("tree nested deeper than 4096"));
            }
            open.push(children);
            root = false;
            continue;
        }
        if root {
            return if r.pos == body.len() {
                Ok(out)
            } else {
                Err(r.err("trailing bytes after the tree"))
            };
        }
        path.pop();
        loop {
            let Some(top) = open.last_mut() else {
                if r.pos != body.len() {
                    return Err(r.err("trailing bytes after the tree"));
                }
                return Ok(out);
            };
            *top -= 1;
            if *top > 0 {
                break;
            }
            open.pop();
            if open.is_empty() {
                if r.pos != body.len() {
                    return Err(r.err("trailing bytes after the tree"));
                }
                return Ok(out);
            }
            path.pop();
        }
        root = false;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn uvarint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub(crate) fn node(out: &mut Vec<u8>, name: &str, value: u64, children: u64) {
        uvarint(out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        uvarint(out, value);
        uvarint(out, children);
    }

    #[test]
    fn trie_concatenates_fragments() {
        // root "" → "foo;ba" → ("r" = 100, "z" = 200)
        let mut b = Vec::new();
        node(&mut b, "", 0, 1);
        node(&mut b, "foo;ba", 0, 2);
        node(&mut b, "r", 100, 0);
        node(&mut b, "z", 200, 0);
        assert_eq!(
            decode_trie(&b).unwrap(),
            vec![("foo;bar".to_string(), 100), ("foo;baz".to_string(), 200)]
        );
    }

    #[test]
    fn tree_yields_paths_with_self() {
        let mut b = Vec::new();
        node(&mut b, "root", 0, 2);
        node(&mut b, "foo", 5, 2);
        node(&mut b, "bar", 100, 0);
        node(&mut b, "baz", 200, 0);
        node(&mut b, "qux", 7, 0);
        let got = decode_tree(&b).unwrap();
        let got: Vec<(String, i64)> = got.into_iter().map(|(p, v)| (p.join(";"), v)).collect();
        assert_eq!(
            got,
            vec![
                ("foo".into(), 5),
                ("foo;bar".into(), 100),
                ("foo;baz".into(), 200),
                ("qux".into(), 7)
            ]
        );
    }

    #[test]
    fn truncated_and_hostile_bodies_are_errors() {
        let mut b = Vec::new();
        node(&mut b, "", 0, 1);
        node(&mut b, "foo", 1, 0);
        for cut in 0..b.len() {
            assert!(decode_trie(&b[..cut]).is_err(), "cut at {cut}");
            assert!(decode_tree(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_trie(&[0xff; 11]).is_err());
        assert!(decode_tree(&[0x7f, b'a']).is_err());
        let mut deep = Vec::new();
        for _ in 0..5000 {
            node(&mut deep, "a", 0, 1);
        }
        assert!(decode_tree(&deep).is_err());
    }
}
