//! Names of the kernel's drop reasons, read from the running kernel: the
//! numbers of `enum skb_drop_reason` change between kernel versions, so they
//! never come from a table in this code.
//!
//! Two sources, tried in order by [`DropReasons::from_kernel`]:
//! - BTF (`/sys/kernel/btf/vmlinux`): the enum itself. Needs no mount and is
//!   there whenever tp_btf programs can load at all.
//! - tracefs (`.../events/skb/kfree_skb/format`): the `__print_symbolic` table
//!   the tracepoint prints reasons with.
//!
//! Names are given as Hubble and `skymap observe` spell them: without the
//! `SKB_DROP_REASON_` prefix (`NETFILTER_DROP`, `NO_SOCKET`).

use std::collections::BTreeMap;
use std::path::Path;

/// Where the kernel's BTF lives.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The kfree_skb tracepoint's format, under either tracefs mount point.
pub const TRACEFS_FORMATS: [&str; 2] = [
    "/sys/kernel/tracing/events/skb/kfree_skb/format",
    "/sys/kernel/debug/tracing/events/skb/kfree_skb/format",
];

const ENUM_NAME: &str = "skb_drop_reason";
const PREFIXES: [&str; 2] = ["SKB_DROP_REASON_", "SKB_"];

/// Why the names could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReasonsError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("BTF: {0}")]
    Btf(String),
    #[error("BTF has no enum {ENUM_NAME}: this kernel reports no drop reasons")]
    NoEnum,
    #[error("tracefs format has no reason table")]
    NoTable,
    #[error("no source of drop reason names worked: {0}")]
    Nothing(String),
}

/// Reason number → name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReasons {
    names: BTreeMap<u32, String>,
}

impl DropReasons {
    /// From BTF, else tracefs; the error says what each source lacked.
    pub fn from_kernel() -> Result<Self, ReasonsError> {
        let btf = read(Path::new(VMLINUX_BTF)).and_then(|bytes| Self::from_btf(&bytes));
        let btf_error = match btf {
            Ok(reasons) => return Ok(reasons),
            Err(e) => e,
        };
        let mut errors = vec![btf_error.to_string()];
        for path in TRACEFS_FORMATS {
            match std::fs::read_to_string(path) {
                Ok(text) => match Self::from_tracefs_format(&text) {
                    Ok(reasons) => return Ok(reasons),
                    Err(e) => errors.push(format!("{path}: {e}")),
                },
                Err(e) => errors.push(format!("{path}: {e}")),
            }
        }
        Err(ReasonsError::Nothing(errors.join("; ")))
    }

    /// The enum in a raw BTF blob (the contents of `/sys/kernel/btf/vmlinux`).
    pub fn from_btf(bytes: &[u8]) -> Result<Self, ReasonsError> {
        let btf = Btf::parse(bytes)?;
        let entries = btf.enum_entries(ENUM_NAME)?.ok_or(ReasonsError::NoEnum)?;
        let names = entries
            .into_iter()
            .filter_map(|(name, value)| Some((u32::try_from(value).ok()?, short(&name))))
            .collect();
        Ok(Self { names })
    }

    /// The `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)` table
    /// of the tracepoint's format file.
    pub fn from_tracefs_format(text: &str) -> Result<Self, ReasonsError> {
        let table = text
            .split_once("__print_symbolic(REC->reason")
            .map(|(_, rest)| rest)
            .ok_or(ReasonsError::NoTable)?;
        let mut names = BTreeMap::new();
        for entry in table.split('{').skip(1) {
            let Some((number, rest)) = entry.split_once(',') else {
                continue;
            };
            let Ok(number) = number.trim().parse::<u32>() else {
                continue;
            };
            let mut quoted = rest.split('"');
            // Already without the enum's prefixes.
            if let (Some(_), Some(name)) = (quoted.next(), quoted.next()) {
                names.insert(number, name.to_string());
            }
        }
        if names.is_empty() {
            return Err(ReasonsError::NoTable);
        }
        Ok(Self { names })
    }

    /// The name of reason `number`, or `REASON_<number>` for one this kernel
    /// did not describe.
    pub fn name(&self, number: u32) -> String {
        self.names
            .get(&number)
            .cloned()
            .unwrap_or_else(|| format!("REASON_{number}"))
    }

    /// The number of a reason by name (`NETFILTER_DROP`).
    pub fn number(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(&number, _)| number)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// `SKB_DROP_REASON_SKB_CSUM` → `SKB_CSUM`, `SKB_CONSUMED` → `CONSUMED`:
/// the names the tracepoint prints.
fn short(name: &str) -> String {
    PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
        .to_string()
}

fn read(path: &Path) -> Result<Vec<u8>, ReasonsError> {
    std::fs::read(path).map_err(|e| ReasonsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Just enough of the BTF format to walk its types and read enums: every
/// kind's size is known, so unknown kinds are an error rather than a guess.
struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    little: bool,
}

const BTF_MAGIC: u16 = 0xeb9f;
const TYPE_HEADER: usize = 12;

impl<'a> Btf<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ReasonsError> {
        let err = |m: &str| ReasonsError::Btf(m.to_string());
        if bytes.len() < 24 {
            return Err(err("shorter than its header"));
        }
        let little = match [bytes[0], bytes[1]] {
            m if u16::from_le_bytes(m) == BTF_MAGIC => true,
            m if u16::from_be_bytes(m) == BTF_MAGIC => false,
            _ => return Err(err("bad magic")),
        };
        let word = |at: usize| read_u32(bytes, at, little).ok_or_else(|| err("truncated header"));
        let header_len = word(4)? as usize;
        let (type_off, type_len) = (word(8)? as usize, word(12)? as usize);
        let (str_off, str_len) = (word(16)? as usize, word(20)? as usize);
        let section = |off: usize, len: usize, what: &str| {
            let start = header_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(s), Some(e)) if e <= bytes.len() => Ok(&bytes[s..e]),
                _ => Err(ReasonsError::Btf(format!(
                    "{what} section outside the file"
                ))),
            }
        };
        Ok(Self {
            types: section(type_off, type_len, "type")?,
            strings: section(str_off, str_len, "string")?,
            little,
        })
    }

    fn string(&self, offset: u32) -> Option<&'a str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    /// `(name, value)` of the enum (or enum64) called `wanted`, if any.
    fn enum_entries(&self, wanted: &str) -> Result<Option<Vec<(String, i64)>>, ReasonsError> {
        let mut at = 0;
        while at < self.types.len() {
            let word = |offset: usize| {
                read_u32(self.types, at + offset, self.little)
                    .ok_or_else(|| ReasonsError::Btf(format!("type at {at} truncated")))
            };
            let (name_off, info) = (word(0)?, word(4)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF.., FUNC, FLOAT, TYPE_TAG
                3 => 12,                   // ARRAY
                4 | 5 | 15 => vlen * 12,   // STRUCT, UNION, DATASEC
                6 | 13 => vlen * 8,        // ENUM, FUNC_PROTO
                19 => vlen * 12,           // ENUM64
                other => return Err(ReasonsError::Btf(format!("unknown kind {other} at {at}"))),
            };
            let body = at + TYPE_HEADER;
            if (kind == 6 || kind == 19) && self.string(name_off) == Some(wanted) {
                let step = if kind == 6 { 8 } else { 12 };
                let mut entries = Vec::with_capacity(vlen);
                for i in 0..vlen {
                    let entry = body + i * step;
                    let field = |offset: usize| {
                        read_u32(self.types, entry + offset, self.little)
                            .ok_or_else(|| ReasonsError::Btf(format!("enum {wanted} truncated")))
                    };
                    let name = self
                        .string(field(0)?)
                        .ok_or_else(|| ReasonsError::Btf(format!("enum {wanted}: bad name")))?;
                    let value = if kind == 6 {
                        i64::from(field(4)? as i32)
                    } else {
                        (i64::from(field(8)?) << 32) | i64::from(field(4)?)
                    };
                    entries.push((name.to_string(), value));
                }
                return Ok(Some(entries));
            }
            at = body + extra;
        }
        Ok(None)
    }
}

fn read_u32(bytes: &[u8], at: usize, little: bool) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(raw)
    } else {
        u32::from_be_bytes(raw)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little BTF blob: an int, a struct with two members, then the enum.
    fn blob(enum_name: &str) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut add = |s: &str| {
            let at = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        };
        let int = add("int");
        let point = add("point");
        let (x, y) = (add("x"), add("y"));
        let name = add(enum_name);
        let reasons = [
            (add("SKB_NOT_DROPPED_YET"), 0),
            (add("SKB_CONSUMED"), 1),
            (add("SKB_DROP_REASON_NOT_SPECIFIED"), 2),
            (add("SKB_DROP_REASON_NO_SOCKET"), 3),
            (add("SKB_DROP_REASON_NETFILTER_DROP"), 12),
        ];
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
        push(&[int, 1 << 24, 4, 0x20]); // INT, 32 bits
        push(&[point, (4 << 24) | 2, 8, x, 1, 0, y, 1, 32]); // STRUCT {x, y}
        let mut e = vec![name, (6 << 24) | reasons.len() as u32, 4];
        for (n, v) in reasons {
            e.extend([n, v]);
        }
        push(&e);
        let mut out = Vec::new();
        out.extend(BTF_MAGIC.to_le_bytes());
        out.extend([1, 0]);
        for w in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(w.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn reads_the_enum_from_btf() {
        let reasons = DropReasons::from_btf(&blob("skb_drop_reason")).expect("parses");
        assert_eq!(reasons.len(), 5);
        assert_eq!(reasons.name(12), "NETFILTER_DROP");
        assert_eq!(reasons.name(3), "NO_SOCKET");
        assert_eq!(reasons.name(1), "CONSUMED");
        assert_eq!(reasons.name(99), "REASON_99");
        assert_eq!(reasons.number("NETFILTER_DROP"), Some(12));
    }

    #[test]
    fn bad_btf_is_an_error_not_a_panic() {
        assert_eq!(
            DropReasons::from_btf(&blob("something_else")),
            Err(ReasonsError::NoEnum)
        );
        let good = blob("skb_drop_reason");
        for cut in 0..good.len() {
            let _ = DropReasons::from_btf(&good[..cut]);
        }
        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        assert!(matches!(
            DropReasons::from_btf(&bad_magic),
            Err(ReasonsError::Btf(_))
        ));
        let mut bad_kind = good;
        bad_kind[24 + 7] = 31; // first type's kind byte
        assert!(matches!(
            DropReasons::from_btf(&bad_kind),
            Err(ReasonsError::Btf(m)) if m.contains("unknown kind")
        ));
    }

    #[test]
    fn reads_the_tracefs_table() {
        let format = r#"print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 12, "NETFILTER_DROP" }, { 127, "MAX" })"#;
        let reasons = DropReasons::from_tracefs_format(format).expect("parses");
        assert_eq!(reasons.name(12), "NETFILTER_DROP");
        assert_eq!(reasons.name(3), "NO_SOCKET");
        assert_eq!(reasons.len(), 4);
        assert_eq!(
            DropReasons::from_tracefs_format("print fmt: \"nothing\""),
            Err(ReasonsError::NoTable)
        );
    }
}
